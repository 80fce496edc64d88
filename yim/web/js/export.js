// Data exports (docs/protocol.md §19.7): the server answers a zip archive, which needs the
// bearer token, so a plain link cannot fetch it. The bytes are fetched, then saved through
// a blob: URL under the file name the server gives (Content-Disposition).
import { ApiError } from "./api.js";

function fileName(res, fallback) {
  const header = res.headers.get("Content-Disposition") ?? "";
  const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (utf8) {
    try {
      return decodeURIComponent(utf8[1]);
    } catch {
      // a malformed name: the plain one below
    }
  }
  return /filename="([^"]+)"/i.exec(header)?.[1] ?? fallback;
}

// Fetch `path` (an export route) and save it; resolves to the file name. No time bound: the
// server builds the whole archive before its first byte.
export async function downloadArchive(api, path) {
  let res;
  try {
    res = await fetch(api.base + path, { headers: { Authorization: `Bearer ${api.token}` }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Check your connection.");
  }
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    const retry = Number(data?.retry_after ?? res.headers.get("Retry-After"));
    throw new ApiError(
      res.status,
      data?.code ?? "http_" + res.status,
      data?.message ?? res.statusText,
      Number.isFinite(retry) && retry > 0 ? retry : null,
    );
  }
  const name = fileName(res, "yim-export.zip");
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return name;
}
