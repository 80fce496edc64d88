// A small emoji picker: a popover grid; choosing one inserts it at the caret.
import { h } from "../dom.js";
import { t } from "../i18n.js";

export const EMOJI = [
  "😀", "😂", "🥹", "😊", "😍", "😘", "😎", "🤔",
  "😅", "😭", "😡", "😴", "🤗", "🙄", "😮", "🥳",
  "👍", "👎", "👏", "🙏", "🤝", "💪", "👋", "👀",
  "❤️", "💔", "🔥", "🎉", "✨", "🌹", "☕", "🍻",
  "✅", "❌", "💯", "🆗", "📦", "🧧", "🎁", "🚀",
];

export class EmojiPicker {
  constructor(onPick) {
    this.el = h(
      "div",
      { class: "emoji-picker", role: "dialog", "aria-label": t("Emoji"), hidden: true },
      h(
        "div",
        { class: "emoji-grid" },
        EMOJI.map((e) =>
          h(
            "button",
            { type: "button", class: "emoji-choice", title: e, "aria-label": e, onclick: () => onPick(e) },
            e,
          ),
        ),
      ),
    );
    this.el.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close();
    });
    this._outside = (e) => {
      if (!this.el.contains(e.target) && !e.target.closest?.(".emoji-btn")) this.close();
    };
  }

  get isOpen() {
    return !this.el.hidden;
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  open() {
    this.el.hidden = false;
    document.addEventListener("pointerdown", this._outside);
    this.el.querySelector("button")?.focus();
  }

  close() {
    this.el.hidden = true;
    document.removeEventListener("pointerdown", this._outside);
  }
}
