// A message text as nodes: its @mentions marked and its web addresses as links. Everything
// else stays text nodes (dom.js), so a message cannot inject markup. Only http and https
// addresses become links — never javascript:, data: or any other scheme — and a link opens
// in a new tab without giving that page a handle on this one (rel="noopener noreferrer").
import { h } from "../dom.js";

// An address ends at a space, a quote or Chinese punctuation ("见https://x.org，谢谢").
const URL_RE = /\bhttps?:\/\/[^\s<>"'`，。；：！？、（）【】《》「」『』]+/giu;
// Punctuation that ends a sentence rather than an address ("see https://x.org/a." or "（https://x.org）").
const TRAILING = /[.,;:!?'"’”)\]}>，。；：！？、）】》」』]/u;

// `labels`: the names the message mentions, as written after "@". Links are found first, so
// that an "@name" inside an address stays part of the link.
export function richText(text, labels) {
  const parts = linkify(text);
  if (!labels.length) return parts;
  const re = new RegExp(`@(?:${labels.map(escapeRegExp).join("|")})`, "gu");
  return parts.flatMap((part) => (typeof part === "string" ? markMentions(part, re) : [part]));
}

function markMentions(text, re) {
  const out = [];
  let at = 0;
  for (const match of text.matchAll(re)) {
    out.push(text.slice(at, match.index), h("span", { class: "mention" }, match[0]));
    at = match.index + match[0].length;
  }
  out.push(text.slice(at));
  return out.filter((part) => part !== "");
}

export function linkify(text) {
  const out = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    const raw = trimEnd(match[0]);
    const href = safeHref(raw);
    if (!href) continue;
    out.push(text.slice(at, match.index), link(href, raw));
    at = match.index + raw.length;
  }
  out.push(text.slice(at));
  return out.filter((part) => part !== "");
}

function trimEnd(raw) {
  while (raw && TRAILING.test(raw.at(-1))) {
    // A closing bracket balanced by one in the address is part of it (as in Wikipedia's).
    if (raw.at(-1) === ")" && raw.split("(").length >= raw.split(")").length) break;
    raw = raw.slice(0, -1);
  }
  return raw;
}

// The address to link to, or null: it must parse and be http(s) with a host.
function safeHref(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname ? url.href : null;
}

function link(href, text) {
  return h("a", { class: "text-link", href, target: "_blank", rel: "noopener noreferrer" }, text);
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
