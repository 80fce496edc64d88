// Presentation helpers: names, avatars, times, message previews.
import { withPhoto } from "./avatar.js";
import { h } from "./dom.js";
import { language, t } from "./i18n.js";

// Dates and times in the page's language (not the browser's), so a page read in Chinese
// says "12月5日 星期六" and one read in English "Saturday, December 5".
const timeFmt = new Intl.DateTimeFormat(language(), { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(language(), { month: "short", day: "numeric" });
const longDayFmt = new Intl.DateTimeFormat(language(), { weekday: "long", month: "long", day: "numeric" });
const yearDayFmt = new Intl.DateTimeFormat(language(), { year: "numeric", month: "short", day: "numeric" });
const dateTimeFmt = new Intl.DateTimeFormat(language(), { dateStyle: "medium", timeStyle: "short" });
const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });
const EMOJI = /^\p{Extended_Pictographic}/u;

export function displayName(user) {
  if (!user) return "…";
  return user.display_name || user.username || t("User {id}", { id: user.user_id });
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
  if (dayKey(ms) === dayKey(now.getTime())) return t("Today");
  if (dayKey(ms) === dayKey(now.getTime() - 86400000)) return t("Yesterday");
  return d.getFullYear() === now.getFullYear() ? longDayFmt.format(d) : yearDayFmt.format(d);
}

export function timeLabel(ms) {
  return timeFmt.format(new Date(ms));
}

// A full date and time ("Dec 5, 2026, 16:50"), e.g. for tables; "" for none.
export function dateTime(ms) {
  return ms == null ? "" : dateTimeFmt.format(new Date(ms));
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
  if (conv.type === "group") return conv.name || t("Group");
  if (conv.type === "service") {
    const shop = conv.name || t("Shop");
    return customer ? `${displayName(customer)} · ${shop}` : shop;
  }
  return displayName(conv.peer);
}

// One line for a group's system entry (docs/protocol.md §11.3). `name(id)` gives a user's
// name (t("You") for oneself).
export function systemText(m, name) {
  const b = m.body ?? {};
  const who = name(b.actor ?? m.sender_id);
  const users = (b.users ?? []).filter((u) => u !== b.actor);
  const list = users.map(name).join(t(", "));
  switch (b.event) {
    case "created":
      return b.name
        ? t("{who} created the group “{name}”", { who, name: b.name })
        : t("{who} created the group", { who });
    case "invited":
      return list ? t("{who} added {list}", { who, list }) : t("{who} added members", { who });
    case "joined":
      return t("{who} joined the group", { who });
    case "left":
      return t("{who} left the group", { who });
    case "removed":
      return list ? t("{who} removed {list}", { who, list }) : t("{who} removed a member", { who });
    case "role":
      return b.role === "admin"
        ? t("{who} made {list} an admin", { who, list })
        : t("{who} made {list} a member", { who, list });
    case "owner":
      return t("{who} made {list} the owner", { who, list });
    case "muted":
      return t("{who} muted {list}", { who, list });
    case "unmuted":
      return t("{who} unmuted {list}", { who, list });
    case "updated": {
      const c = b.changes ?? {};
      if (c.name) return t("{who} renamed the group to “{name}”", { who, name: c.name });
      if (c.announcement != null) return t("{who} changed the announcement", { who });
      if (c.mute_all === true) return t("{who} muted the group", { who });
      if (c.mute_all === false) return t("{who} unmuted the group", { who });
      return t("{who} changed the group settings", { who });
    }
    case "dissolved":
      return t("{who} dissolved the group", { who });
    case "pinned":
      return t("{who} pinned a message", { who });
    case "unpinned":
      return t("{who} unpinned a message", { who });
    default:
      return t("{who} changed the group", { who });
  }
}

export function messageText(m) {
  if (m.recalled) return t("Message recalled");
  const body = m.body ?? {};
  if (m.kind === "text") return body.text ?? "";
  if (m.kind === "emoji") return body.emoji ?? "";
  if (m.kind === "image") return t("[Image]");
  if (m.kind === "video") return t("[Video]") + " " + (body.name ?? "");
  if (m.kind === "file") return t("[File]") + " " + (body.name ?? "");
  if (m.kind === "system") return t("Group updated");
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
    "aria-label": presenceText(p),
    role: "img",
  });
}

export function presenceText(p) {
  if (!p) return "";
  if (p.status === "online") return t("online");
  if (p.status === "away") return t("away");
  return p.last_seen ? t("last seen {when}", { when: shortWhen(p.last_seen) }) : t("offline");
}

// An agent's status (online, busy, away, offline) as people read it.
export function agentStatus(s) {
  return { online: t("online"), busy: t("busy"), away: t("away"), offline: t("offline") }[s] ?? s ?? "";
}

// A role in a group (owner, admin, member) as people read it.
export function groupRole(r) {
  return { owner: t("owner"), admin: t("admin"), member: t("member") }[r] ?? r ?? "";
}

// A role in a shop (admin, agent) as people read it.
export function shopRole(r) {
  return { admin: t("admin"), agent: t("agent") }[r] ?? r ?? "";
}

// A customer-service category as people read it.
export function category(c) {
  return { pre_sale: t("pre-sale"), after_sale: t("after-sale") }[c] ?? c ?? "";
}
