// The "Search" tab: history search over all of the user's conversations (the `search` op,
// docs/protocol.md §16.4). Each hit shows its conversation, who wrote it and a snippet with
// the matches marked; choosing it opens the conversation at that message.
import { h } from "../dom.js";
import { avatar, convTitle, displayName, shortWhen } from "../format.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

const PAGE = 20;
const CONTEXT = 24; // code points shown before the first match

export class SearchView {
  constructor({ store, onOpen }) {
    this.store = store;
    this.onOpen = onOpen;
    this.query = "";
    this.next = null;
    this.busy = false;
    this.input = h("input", {
      type: "search",
      name: "q",
      placeholder: t("Search messages"),
      "aria-label": t("Search messages"),
      autocomplete: "off",
      maxlength: 100,
    });
    this.status = h("p", { class: "search-status", role: "status" });
    this.results = h("ul", { class: "search-results", "aria-label": t("Search results") });
    this.more = h(
      "button",
      { type: "button", class: "ghost more-results", hidden: true, onclick: () => this.run(this.query, this.next) },
      t("More results"),
    );
    this.el = h(
      "div",
      { class: "search-panel" },
      h(
        "form",
        {
          class: "new-chat",
          role: "search",
          onsubmit: (e) => {
            e.preventDefault();
            this.run(this.input.value.trim(), null);
          },
        },
        this.input,
        h("button", { type: "submit", class: "primary small" }, t("Search")),
      ),
      h("div", { class: "conv-scroll" }, this.status, this.results, this.more),
    );
  }

  focus() {
    this.input.focus({ preventScroll: true });
  }

  async run(q, before) {
    if (!q || this.busy) return;
    this.busy = true;
    this.query = q;
    if (!before) {
      this.results.replaceChildren();
      this.status.textContent = t("Searching…");
    }
    this.more.hidden = true;
    try {
      const fields = { q, limit: PAGE };
      if (before) fields.before = before;
      const page = await this.store.socket.request("search", fields);
      for (const hit of page.hits) this.results.append(this.hitEl(hit));
      this.next = page.next_before;
      this.more.hidden = !this.next;
      const n = this.results.childElementCount;
      this.status.textContent = n ? "" : t("Nothing found for “{q}”.", { q });
    } catch (err) {
      this.status.textContent =
        err.code === "unavailable" ? t("Search is not available on this server.") : errorText(err);
    } finally {
      this.busy = false;
    }
  }

  hitEl(hit) {
    const m = hit.message;
    const conv = this.store.convs.get(m.conv_id);
    if (!conv) this.store.fetchConv(m.conv_id);
    const title = conv ? convTitle(conv) : t("Conversation");
    const sender = m.sender_id === this.store.me.user_id ? t("You") : displayName(this.store.user(m.sender_id));
    const face =
      conv?.type === "group" || !conv ? avatar({ user_id: m.conv_id, display_name: title }) : avatar(conv.peer);
    return h(
      "li",
      null,
      h(
        "button",
        {
          type: "button",
          class: "conv search-hit",
          dataset: { convId: m.conv_id, seq: String(m.seq) },
          onclick: () => this.onOpen(m.conv_id, m.seq),
        },
        face,
        h(
          "span",
          { class: "conv-main" },
          h(
            "span",
            { class: "conv-top" },
            h("span", { class: "conv-name" }, title),
            h("time", { class: "conv-time" }, shortWhen(m.created_at)),
          ),
          h("span", { class: "hit-text" }, h("span", { class: "hit-sender" }, sender + ": "), snippet(hit)),
        ),
      ),
    );
  }
}

// The matched text with <mark>s at the highlights ([start, end) in code points), cut to
// start a little before the first match.
function snippet(hit) {
  const chars = Array.from(hit.text);
  const spans = hit.highlights ?? [];
  let from = spans.length ? Math.max(0, spans[0][0] - CONTEXT) : 0;
  const out = [];
  if (from > 0) out.push("…");
  for (const [start, end] of spans) {
    if (end <= from) continue;
    if (start > from) out.push(chars.slice(from, start).join(""));
    out.push(h("mark", null, chars.slice(Math.max(start, from), end).join("")));
    from = end;
  }
  out.push(chars.slice(from).join(""));
  return h("span", { class: "hit-snippet" }, out);
}
