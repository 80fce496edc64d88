// Presentation helpers: names, avatars, times, message previews.
import { withPhoto } from "./avatar.js";
import { h } from "./dom.js";

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const longDayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });
const yearDayFmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });
const EMOJI = /^\p{Extended_Pictographic}/u;

export function displayName(user) {
  if (!user) return "…";
  return user.display_name || user.username || `User ${user.user_id}`;
}

function firstGrapheme(text) {
  for (const { segment } of graphemes.segment(text.trim())) return segment;
  return "?";
}

function hue(id) {
  let x = 0;
  for (const ch of String(id)) x = (x * 31 + ch.charCodeAt(0)) % 360;
  return x;
}

export function avatar(user, size = "md") {
  const name = displayName(user);
  const el = h("span", { class: `avatar avatar-${size}`, "aria-hidden": "true" }, firstGrapheme(name).toUpperCase());
  el.style.setProperty("--hue", String(hue(user?.user_id ?? name))); // CSSOM: allowed by the page's CSP
  return withPhoto(el, user); // the user's picture over the initials, once loaded
}

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function dayLabel(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (dayKey(ms) === dayKey(now.getTime())) return "Today";
  if (dayKey(ms) === dayKey(now.getTime() - 86400000)) return "Yesterday";
  return d.getFullYear() === now.getFullYear() ? longDayFmt.format(d) : yearDayFmt.format(d);
}

export function timeLabel(ms) {
  return timeFmt.format(new Date(ms));
}

export function shortWhen(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  if (dayKey(ms) === dayKey(Date.now())) return timeFmt.format(d);
  return d.getFullYear() === new Date().getFullYear() ? dayFmt.format(d) : yearDayFmt.format(d);
}

// A conversation's title. Service conversations are named after the shop; the agent
// serving one sees the customer too (`customer`: that user, when known).
export function convTitle(conv, customer = null) {
  if (conv.type === "group") return conv.name || "Group";
  if (conv.type === "service") {
    const shop = conv.name || "Shop";
    return customer ? `${displayName(customer)} · ${shop}` : shop;
  }
  return displayName(conv.peer);
}

// One line for a group's system entry (docs/protocol.md §11.3). `name(id)` gives a user's
// name ("You" for oneself).
export function systemText(m, name) {
  const b = m.body ?? {};
  const who = name(b.actor ?? m.sender_id);
  const users = (b.users ?? []).filter((u) => u !== b.actor);
  const list = users.map(name).join(", ");
  switch (b.event) {
    case "created":
      return `${who} created the group${b.name ? ` “${b.name}”` : ""}`;
    case "invited":
      return `${who} added ${list || "members"}`;
    case "joined":
      return `${who} joined the group`;
    case "left":
      return `${who} left the group`;
    case "removed":
      return `${who} removed ${list || "a member"}`;
    case "role":
      return b.role === "admin" ? `${who} made ${list} an admin` : `${who} made ${list} a member`;
    case "owner":
      return `${who} made ${list} the owner`;
    case "muted":
      return `${who} muted ${list}`;
    case "unmuted":
      return `${who} unmuted ${list}`;
    case "updated": {
      const c = b.changes ?? {};
      if (c.name) return `${who} renamed the group to “${c.name}”`;
      if (c.announcement != null) return `${who} changed the announcement`;
      if (c.mute_all === true) return `${who} muted the group`;
      if (c.mute_all === false) return `${who} unmuted the group`;
      return `${who} changed the group settings`;
    }
    case "dissolved":
      return `${who} dissolved the group`;
    case "pinned":
      return `${who} pinned a message`;
    case "unpinned":
      return `${who} unpinned a message`;
    default:
      return `${who} changed the group`;
  }
}

export function messageText(m) {
  if (m.recalled) return "Message recalled";
  const body = m.body ?? {};
  if (m.kind === "text") return body.text ?? "";
  if (m.kind === "emoji") return body.emoji ?? "";
  if (m.kind === "image") return "[Image]";
  if (m.kind === "video") return "[Video] " + (body.name ?? "");
  if (m.kind === "file") return "[File] " + (body.name ?? "");
  if (m.kind === "system") return "Group updated";
  // An app-defined message: its text fallback (docs/protocol.md §11.3a).
  if (m.kind === "custom") return body.text || `[${body.type ?? "custom"}]`;
  return `[${m.kind}]`;
}

// A text that is one emoji (one grapheme, pictographic) is sent as an `emoji` message.
export function singleEmoji(text) {
  const t = text.trim();
  const segs = [...graphemes.segment(t)];
  return segs.length === 1 && EMOJI.test(t) ? t : null;
}

// A presence dot (online, away, offline) for an avatar; `p` is a Presence, or null when
// the presence is unknown or not visible to us: then no dot, rather than a false "offline".
export function presenceDot(p) {
  if (!p) return null;
  return h("span", {
    class: "presence-dot",
    dataset: { presence: p.status },
    title: presenceText(p),
    "aria-label": p.status,
    role: "img",
  });
}

export function presenceText(p) {
  if (!p) return "";
  if (p.status === "online") return "online";
  if (p.status === "away") return "away";
  return p.last_seen ? `last seen ${shortWhen(p.last_seen)}` : "offline";
}

// A customer-service category as people read it.
export function category(c) {
  return { pre_sale: "pre-sale", after_sale: "after-sale" }[c] ?? c ?? "";
}
