// @mentions in a group's composer: typing "@" lists the members (and "everyone" for the
// owner and admins), filtered by what follows it against usernames and display names
// (ignoring case and width: "ＢＯＢ" finds bob); ↑ ↓ choose, Enter or Tab picks, Esc closes.
// Picking inserts "@Name ". On sending, the names still present in the text become the
// message's `mentions` / `mention_all` (docs/protocol.md §6.3), as ids.
import { h } from "../dom.js";
import { t } from "../i18n.js";

// An "@" after a space, at the start or after a non-ASCII character (Chinese is written
// without spaces: "你好@鲍"), but not inside an address ("bob@example.com", "https://x.org/@bob").
const TOKEN = /(^|[^A-Za-z0-9_.+\-/:])@([^\s@]{0,32})$/u;
const MAX_SHOWN = 8;
export const EVERYONE = "everyone";

export class MentionPicker {
  // candidates(): [{id, label, sub, username}] for the open group (id "*" = everyone), or [] elsewhere.
  constructor(input, candidates) {
    this.input = input;
    this.candidates = candidates;
    this.chosen = []; // [label, id] picked, in order (two members may share a display name)
    this.items = [];
    this.index = 0;
    this.el = h("ul", { class: "mention-picker", role: "listbox", "aria-label": t("Mention someone"), hidden: true });
  }

  get isOpen() {
    return !this.el.hidden;
  }

  reset() {
    this.chosen = [];
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
    this.items = rank(all, fold(m[2])).slice(0, MAX_SHOWN);
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

  // Keys while open; true when the picker used the key. Keys an input method is composing
  // with (pinyin: Enter commits the letters, ↑ ↓ move among its candidates) are its own.
  onKey(e) {
    if (!this.isOpen || e.isComposing || e.keyCode === 229) return false;
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
    this.chosen.push([label, c.id]);
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

// Case- and width-insensitive: NFKC makes fullwidth letters and digits plain ones.
export function fold(text) {
  return (text ?? "").normalize("NFKC").toLowerCase();
}

// The candidates whose display name or username contains `q`; those starting with it first.
function rank(all, q) {
  if (!q) return all;
  const starts = [];
  const contains = [];
  for (const c of all) {
    const names = [fold(c.label), fold(c.username)];
    if (names.some((n) => n.startsWith(q))) starts.push(c);
    else if (names.some((n) => n.includes(q))) contains.push(c);
  }
  return starts.concat(contains);
}
