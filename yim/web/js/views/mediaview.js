// Media messages in the chat: an image inline (its thumbnail; click for the full size) or a
// file card with its name, size and a download button.
import { h } from "../dom.js";
import { fileSize, fitBox } from "../media.js";
import { icon } from "./icons.js";
import { t } from "../i18n.js";

// What a message (or an unsent outbox item) shows: {id, name, size, width, height, thumbnail, preview}.
export function mediaInfo(m, local, previews) {
  if (local) {
    const up = m.upload ?? {};
    const media = up.media ?? {};
    return {
      id: media.media_id ?? null,
      name: up.name,
      size: up.size,
      width: media.width ?? null,
      height: media.height ?? null,
      thumbnail: false,
      preview: up.preview,
    };
  }
  const b = m.body ?? {};
  return {
    id: b.media_id,
    name: b.name ?? "",
    size: b.size,
    width: b.width,
    height: b.height,
    thumbnail: !!b.thumbnail,
    preview: previews.get(m.msg_id) ?? null,
  };
}

export function imageEl(info, media, uploading) {
  const box = fitBox(info.width, info.height);
  const img = h("img", { class: "media-img", alt: info.name || t("Image"), decoding: "async" });
  img.width = box.width;
  img.height = box.height;
  img.style.width = `${box.width}px`; // CSSOM: allowed by the page's CSP
  img.style.height = `${box.height}px`;
  if (info.preview) img.src = info.preview;
  else if (info.id) {
    const src = info.thumbnail ? media.thumbnail(info.id) : media.full(info.id);
    src.then((url) => (img.src = url)).catch(() => img.classList.add("broken"));
  }
  if (uploading || !info.id) return h("div", { class: "media-image uploading" }, img);
  return h(
    "button",
    {
      type: "button",
      class: "media-image",
      "aria-label": t("Open image {name}", { name: info.name ?? "" }).trim(),
      onclick: () => openLightbox(media, info),
    },
    img,
  );
}

export function fileEl(info, media, uploading) {
  return h(
    "div",
    { class: "file-card" },
    h("span", { class: "file-icon" }, icon("file", 28)),
    h(
      "span",
      { class: "file-text" },
      h("span", { class: "file-name" }, info.name || t("file")),
      h(
        "span",
        { class: "file-size" },
        uploading ? t("Uploading… {size}", { size: fileSize(info.size) }) : fileSize(info.size),
      ),
    ),
    uploading || !info.id
      ? null
      : h(
          "button",
          {
            type: "button",
            class: "file-download",
            "aria-label": t("Download {name}", { name: info.name }),
            title: t("Download"),
            onclick: (e) => {
              const btn = e.currentTarget;
              btn.disabled = true;
              media.download(info.id, info.name).finally(() => (btn.disabled = false));
            },
          },
          icon("download", 18),
        ),
  );
}

// The full-size image over the page; Escape, a click or the button closes it.
export function openLightbox(media, info) {
  const img = h("img", { class: "lightbox-img", alt: info.name || t("Image") });
  let url = null;
  const dlg = h(
    "dialog",
    { class: "lightbox", "aria-label": info.name || t("Image") },
    h("button", { type: "button", class: "lightbox-close", "aria-label": t("Close"), onclick: () => dlg.close() }, "×"),
    img,
    h("p", { class: "lightbox-name" }, info.name ?? ""),
  );
  dlg.addEventListener("click", (e) => {
    if (e.target === dlg) dlg.close();
  });
  dlg.addEventListener("close", () => {
    dlg.remove();
    if (url) URL.revokeObjectURL(url);
  });
  document.body.append(dlg);
  dlg.showModal();
  if (info.preview) img.src = info.preview;
  else {
    media
      .full(info.id)
      .then((u) => {
        url = u;
        img.src = u;
      })
      .catch(() => img.classList.add("broken"));
  }
}

const IMAGE_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"]);

// Images the server shows inline go as `image`; everything else as a `file`.
export function kindOf(file) {
  return IMAGE_TYPES.has(file.type) ? "image" : "file";
}
