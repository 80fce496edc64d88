// A small popup menu (message actions, a user's menu, "new …"): opens at an element or a
// point, closes on a choice, Escape, a click elsewhere, or scrolling.
import { h } from "../dom.js";
import { t } from "../i18n.js";

let open = null;

export function closeMenu() {
  if (!open) return;
  const { el, cleanup, returnFocus } = open;
  open = null;
  cleanup();
  el.remove();
  returnFocus?.focus?.({ preventScroll: true });
}

// items: [{label, onSelect, danger?}] (falsy entries are skipped). at: an element or {x, y}.
export function openMenu(at, items, label = t("Actions")) {
  closeMenu();
  const buttons = items.filter(Boolean).map((item) =>
    h(
      "li",
      { role: "none" },
      h(
        "button",
        {
          type: "button",
          role: "menuitem",
          class: "menu-item" + (item.danger ? " danger" : ""),
          onclick: () => {
            closeMenu();
            item.onSelect();
          },
        },
        item.label,
      ),
    ),
  );
  if (!buttons.length) return;
  const el = h("ul", { class: "menu", role: "menu", "aria-label": label }, buttons);
  document.body.append(el);
  const r = at instanceof Element ? at.getBoundingClientRect() : { left: at.x, right: at.x, top: at.y, bottom: at.y };
  const w = el.offsetWidth;
  const hgt = el.offsetHeight;
  const left = Math.max(8, Math.min(r.right - w, window.innerWidth - w - 8, r.left));
  const below = r.bottom + 4 + hgt < window.innerHeight;
  el.style.left = `${left}px`; // CSSOM: allowed by the page's CSP
  el.style.top = `${below ? r.bottom + 4 : Math.max(8, r.top - hgt - 4)}px`;

  const onDown = (e) => {
    if (!el.contains(e.target)) closeMenu();
  };
  const onKey = (e) => {
    if (e.key === "Escape") closeMenu();
    else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const all = [...el.querySelectorAll("button")];
      const i = all.indexOf(document.activeElement);
      all[(i + (e.key === "ArrowDown" ? 1 : all.length - 1)) % all.length]?.focus();
    }
  };
  const onScroll = (e) => {
    if (!el.contains(e.target)) closeMenu();
  };
  setTimeout(() => document.addEventListener("pointerdown", onDown), 0);
  document.addEventListener("keydown", onKey);
  document.addEventListener("scroll", onScroll, true);
  open = {
    el,
    returnFocus: at instanceof Element ? at : null,
    cleanup() {
      document.removeEventListener("pointerdown", onDown);
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("scroll", onScroll, true);
    },
  };
  el.querySelector("button").focus({ preventScroll: true });
}
