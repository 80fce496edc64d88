// Media downloads (docs/protocol.md §16.2). They need the bearer token, so an <img> cannot
// point at them: the bytes are fetched and shown through blob: URLs (allowed by the
// page's CSP). Thumbnails are small and cached for the page's life; full-size images and
// files are fetched on demand and released when no longer shown.

const THUMB_CACHE = 300;

export class Media {
  constructor(api) {
    this.api = api;
    this.thumbs = new Map(); // media_id -> Promise<blob: URL>
  }

  thumbnail(mediaId) {
    let url = this.thumbs.get(mediaId);
    if (!url) {
      url = this.api.blob(`/api/v1/media/${mediaId}/thumbnail`).then((b) => URL.createObjectURL(b));
      url.catch(() => this.thumbs.delete(mediaId)); // try again next time
      this.thumbs.set(mediaId, url);
      if (this.thumbs.size > THUMB_CACHE) {
        const [oldest, p] = this.thumbs.entries().next().value;
        this.thumbs.delete(oldest);
        p.then((u) => setTimeout(() => URL.revokeObjectURL(u), 60000)).catch(() => {});
      }
    }
    return url;
  }

  // The full bytes, as a blob: URL the caller must release (URL.revokeObjectURL).
  async full(mediaId) {
    return URL.createObjectURL(await this.api.blob(`/api/v1/media/${mediaId}`));
  }

  // Save a file under its name.
  async download(mediaId, name) {
    const url = await this.full(mediaId);
    const a = document.createElement("a");
    a.href = url;
    a.download = name || "download";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }
}

export function fileSize(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

// A box for an image of width × height that fits in max × max (keeps the layout stable
// while the thumbnail loads).
export function fitBox(width, height, max = 240) {
  if (!width || !height) return { width: max, height: Math.round(max * 0.75) };
  const k = Math.min(1, max / Math.max(width, height));
  return { width: Math.max(48, Math.round(width * k)), height: Math.max(48, Math.round(height * k)) };
}
