// Reactions under a message and the pinned line under the chat title (docs/protocol.md
// §6.13–6.16): chips of emoji with their counts (one's own highlighted; a click toggles
// it), a quick-reaction menu with pin / unpin, and the conversation's pinned messages.
import { h } from "../dom.js";
import { messageText } from "../format.js";
import { openMenu } from "./menu.js";
import { toast } from "./toast.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

function report(err) {
  toast(err?.code || err?.message ? errorText(err, "pins") : t("That did not work."));
}

// What a message's reaction row and menu depend on (part of its render signature).
export function reactionKey(m) {
  return (m.reactions ?? []).map((r) => `${r.emoji}${r.count}${r.me ? "*" : ""}`).join(",");
}

export function reactionRow(store, conv, m) {
  const rs = m.reactions ?? [];
  if (!rs.length || m.recalled) return null;
  return h(
    "div",
    { class: "reactions", role: "group", "aria-label": t("Reactions") },
    rs.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: "reaction" + (r.me ? " me" : ""),
          "aria-pressed": r.me ? "true" : "false",
          "aria-label": `${r.emoji} ${r.count}`,
          onclick: () => store.react(conv.conv_id, m.seq, r.emoji, r.me).catch(report),
        },
        h("span", { class: "reaction-emoji" }, r.emoji),
        h("span", { class: "reaction-count" }, String(r.count)),
      ),
    ),
  );
}

// The "react" button beside a bubble: quick reactions, then pin or unpin.
export function reactButton(store, conv, m) {
  if (!m.seq || m.recalled || !conv?.active) return null;
  const pinned = (conv.pinned ?? []).some((p) => p.seq === m.seq);
  return h(
    "button",
    {
      type: "button",
      class: "react-btn",
      "aria-label": t("React"),
      title: t("React or pin"),
      onclick: (e) =>
        openMenu(
          e.currentTarget,
          [
            ...QUICK_REACTIONS.map((emoji) => ({
              label: emoji,
              onSelect: () => {
                const mine = (m.reactions ?? []).some((r) => r.emoji === emoji && r.me);
                store.react(conv.conv_id, m.seq, emoji, mine).catch(report);
              },
            })),
            {
              label: pinned ? t("Unpin") : t("Pin"),
              onSelect: () => store.pin(conv.conv_id, m.seq, pinned).catch(report),
            },
          ],
          t("Reactions"),
        ),
    },
    "☺",
  );
}

export function pinnedKey(conv) {
  return (conv?.pinned ?? []).map((p) => p.seq).join(",");
}

// "📌 <the latest pinned message>" (and how many more), which jumps to it.
export function pinnedLine(conv, onJump) {
  const pins = conv?.pinned ?? [];
  if (!pins.length) return null;
  const latest = pins[0];
  const m = conv.msgs.find((x) => x.seq === latest.seq);
  const text = m ? messageText(m) : t("Message {seq}", { seq: latest.seq });
  const more = pins.length > 1 ? ` (+${pins.length - 1})` : "";
  return h(
    "button",
    { type: "button", class: "pinned-line", title: t("Pinned"), onclick: () => onJump(latest.seq) },
    `📌 ${text}${more}`,
  );
}
