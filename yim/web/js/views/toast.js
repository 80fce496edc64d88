// A short message at the bottom of the screen (an action failed, a request was sent).
import { h } from "../dom.js";

let box = null;

export function toast(text, ms = 3500) {
  if (!box) {
    box = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const el = h("p", { class: "toast" }, text);
  box.append(el);
  setTimeout(() => el.remove(), ms);
}
