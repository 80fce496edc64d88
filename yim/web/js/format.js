// Presentation helpers: names, avatars, times, message previews.
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
  return el;
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

export function convTitle(conv) {
  return conv.type === "group" ? conv.name || "Group" : displayName(conv.peer);
}

const SYSTEM_VERBS = {
  created: "created the group",
  joined: "joined",
  invited: "added members",
  left: "left",
  removed: "removed a member",
  role: "changed a member's role",
  owner: "handed over the group",
  muted: "muted a member",
  unmuted: "unmuted a member",
  updated: "updated the group",
  dissolved: "dissolved the group",
};

export function systemText(m, who) {
  const event = m.body?.event;
  return `${who} ${SYSTEM_VERBS[event] ?? "changed the group"}`;
}

export function messageText(m) {
  if (m.recalled) return "Message recalled";
  const body = m.body ?? {};
  if (m.kind === "text") return body.text ?? "";
  if (m.kind === "emoji") return body.emoji ?? "";
  if (m.kind === "system") return "Group updated";
  return `[${m.kind}]`;
}

// A text that is one emoji (one grapheme, pictographic) is sent as an `emoji` message.
export function singleEmoji(text) {
  const t = text.trim();
  const segs = [...graphemes.segment(t)];
  return segs.length === 1 && EMOJI.test(t) ? t : null;
}
