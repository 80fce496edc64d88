// Replies and forwards in the chat view (docs/protocol.md §6.13, §6.14): the quote shown
// above a reply, the "forwarded" line of a copy, the bar above the composer while a reply
// is being written, and the dialog that picks where to forward a message.
import { h } from "../dom.js";
import { convTitle, displayName, messageText } from "../format.js";
import { openDialog } from "./dialog.js";
import { errorText } from "../errors.js";
import { t, tn } from "../i18n.js";

const EXCERPT_CHARS = 100; // as the server cuts a quote's excerpt

// What the quote of a reply to `m` says, as the server would store it (shown on the
// sending device until its own copy comes back from the server).
export function localQuote(m) {
  const b = m.body ?? {};
  const text = { text: b.text, emoji: b.emoji, file: b.name, custom: b.text }[m.kind];
  return {
    seq: m.seq,
    msg_id: m.msg_id,
    sender_id: m.sender_id,
    kind: m.kind,
    excerpt: typeof text === "string" ? text.slice(0, EXCERPT_CHARS) : "",
  };
}

function quoteText(q, held) {
  // A recall this device has seen wins over an older copy of the quote.
  if (q.recalled || held?.recalled) return t("Message recalled");
  if (q.withheld) return held ? messageText(held) : t("A message from before you joined");
  if (q.excerpt) return q.excerpt;
  return { image: t("[Image]"), video: t("[Video]"), file: t("[File]") }[q.kind] ?? `[${q.kind}]`;
}

// The quote block above a reply's content; null for a message that is no reply.
export function quoteEl(m, conv, store, onJump) {
  const q = m.body?.quote;
  if (!q || typeof q !== "object") return null;
  const held = conv?.msgs?.find((x) => x.seq === q.seq) ?? null;
  const senderId = q.sender_id ?? held?.sender_id;
  const who = senderId ? (senderId === store.me.user_id ? t("You") : displayName(store.user(senderId))) : "";
  return h(
    "button",
    {
      type: "button",
      class: "quote" + (q.recalled || held?.recalled ? " quote-recalled" : ""),
      title: t("Show the quoted message"),
      dataset: { quoteSeq: String(q.seq) },
      onclick: () => onJump?.(q.seq),
    },
    who ? h("span", { class: "quote-sender" }, who) : null,
    h("span", { class: "quote-text" }, quoteText(q, held)),
  );
}

// "Forwarded" (from whom, when the source conversation names them) above a copy's content.
export function forwardedEl(m, store) {
  const f = m.body?.forwarded;
  if (!f || typeof f !== "object") return null;
  const text = f.sender_id
    ? t("Forwarded from {name}", { name: displayName(store.user(f.sender_id)) })
    : t("Forwarded");
  return h("p", { class: "forwarded" }, text);
}

// The bar above the composer while a reply is being written.
export class ReplyBar {
  constructor(store) {
    this.store = store;
    this.msg = null;
    this.text = h("span", { class: "reply-bar-text" });
    this.el = h(
      "div",
      { class: "reply-bar", hidden: true },
      this.text,
      h(
        "button",
        { type: "button", class: "ghost reply-cancel", "aria-label": t("Cancel reply"), onclick: () => this.clear() },
        "×",
      ),
    );
  }

  set(m) {
    this.msg = m;
    const who = m.sender_id === this.store.me.user_id ? t("yourself") : displayName(this.store.user(m.sender_id));
    this.text.textContent = t("Replying to {who}: {text}", { who, text: messageText(m).slice(0, EXCERPT_CHARS) });
    this.el.hidden = false;
  }

  clear() {
    this.msg = null;
    this.el.hidden = true;
  }

  // The send fields of the reply being written, or {} (and the bar closes).
  take(convId) {
    const m = this.msg;
    this.clear();
    if (!m || m.conv_id !== convId) return {};
    return { reply_to: m.seq, quote: localQuote(m) };
  }
}

// Pick conversations and forward `m` to them.
export function openForward(store, m) {
  const targets = store.sortedConvs().filter((c) => c.active !== false && c.type !== "service");
  const boxes = targets.map((c) => ({
    conv: c,
    box: h("input", { type: "checkbox", name: "target", value: c.conv_id }),
  }));
  const list = h(
    "ul",
    { class: "forward-list" },
    boxes.map(({ conv, box }) => h("li", null, h("label", null, box, " ", convTitle(conv)))),
  );
  openDialog({
    title: t("Forward to"),
    content: h(
      "div",
      null,
      h("p", { class: "dialog-note" }, messageText(m).slice(0, EXCERPT_CHARS)),
      targets.length ? list : h("p", { class: "dialog-note" }, t("No conversations yet.")),
    ),
    submitLabel: t("Forward"),
    onSubmit: async () => {
      const chosen = boxes.filter(({ box }) => box.checked).map(({ conv }) => conv.conv_id);
      if (!chosen.length) throw new Error(t("Choose at least one conversation."));
      const out = await store.forward(m.conv_id, [m.seq], chosen);
      const failed = out.results.filter((r) => r.error);
      if (failed.length) {
        throw new Error(
          tn("Not forwarded to {n} of them: {reason}", "Not forwarded to {n} of them: {reason}", failed.length, {
            reason: errorText(failed[0].error),
          }),
        );
      }
    },
  });
}

// What of a reply's quote may change after it is drawn (the quoted message recalled, or
// loaded), so the list redraws the reply then.
export function quoteSig(m, conv) {
  const q = m.body?.quote;
  if (!q || typeof q !== "object") return "";
  const held = conv?.msgs?.find((x) => x.seq === q.seq);
  return `${q.seq}:${q.recalled || held?.recalled ? 1 : 0}:${held ? 1 : 0}`;
}
