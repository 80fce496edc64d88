// @mentions in a group's composer: typing "@" lists the members (and "everyone" for the
// owner and admins); choosing one inserts "@Name ". On sending, the names still present
// in the text become the message's `mentions` / `mention_all` (docs/protocol.md §6.3).
import { h } from "../dom.js";

const TOKEN = /(^|\s)@([^\s@]{0,32})$/u;
const MAX_SHOWN = 8;
export const EVERYONE = "everyone";

export class MentionPicker {
  // candidates(): [{id, label, sub}] for the open group (id "*" = everyone), or [] elsewhere.
  constructor(input, candidates) {
    this.input = input;
    this.candidates = candidates;
    this.chosen = new Map(); // label -> id
    this.items = [];
    this.index = 0;
    this.el = h("ul", { class: "mention-picker", role: "listbox", "aria-label": "Mention someone", hidden: true });
  }

  get isOpen() {
    return !this.el.hidden;
  }

  reset() {
    this.chosen.clear();
    this.close();
  }

  close() {
    this.el.hidden = true;
    this.items = [];
  }

  // After each input: open, filter or close.
  update() {
    const el = this.input;
    const before = el.value.slice(0, el.selectionStart ?? el.value.length);
    const m = before.match(TOKEN);
    const all = m ? this.candidates() : [];
    if (!m || !all.length) return this.close();
    const q = m[2].toLowerCase();
    this.items = all.filter((c) => !q || c.label.toLowerCase().includes(q) || c.sub?.toLowerCase().includes(q));
    this.items = this.items.slice(0, MAX_SHOWN);
    if (!this.items.length) return this.close();
    this.index = Math.min(this.index, this.items.length - 1);
    this.render();
  }

  render() {
    this.el.replaceChildren(
      ...this.items.map((c, i) =>
        h(
          "li",
          {
            role: "option",
            class: "mention-option",
            "aria-selected": i === this.index ? "true" : "false",
            onpointerdown: (e) => {
              e.preventDefault(); // keep the focus in the composer
              this.pick(c);
            },
          },
          h("span", { class: "mention-label" }, c.id === "*" ? "@" + EVERYONE : c.label),
          c.sub ? h("span", { class: "mention-sub" }, c.sub) : null,
        ),
      ),
    );
    this.el.hidden = false;
  }

  // Keys while open; true when the picker used the key.
  onKey(e) {
    if (!this.isOpen) return false;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const n = this.items.length;
      this.index = (this.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.render();
    } else if (e.key === "Enter" || e.key === "Tab") {
      this.pick(this.items[this.index]);
    } else if (e.key === "Escape") {
      this.close();
    } else return false;
    e.preventDefault();
    return true;
  }

  pick(c) {
    const el = this.input;
    const end = el.selectionStart ?? el.value.length;
    const start = el.value.slice(0, end).lastIndexOf("@");
    const label = c.id === "*" ? EVERYONE : c.label;
    el.setRangeText(`@${label} `, start, end, "end");
    this.chosen.set(label, c.id);
    this.close();
    el.focus();
    el.dispatchEvent(new Event("input"));
  }

  // The mentions still in the text.
  collect(text) {
    const mentions = [];
    let all = false;
    for (const [label, id] of this.chosen) {
      if (!text.includes("@" + label)) continue;
      if (id === "*") all = true;
      else if (!mentions.includes(id)) mentions.push(id);
    }
    return { mentions, mention_all: all };
  }
}
