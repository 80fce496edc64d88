// The page's language. Every string the page shows goes through t() (or tn() where English
// needs a plural): the English text is the key, so the source reads as it renders, and a
// catalog maps it to another language. A string missing from a catalog shows in English,
// never as a key; tests/test_web_i18n.py fails the build on any t()/tn() literal that the
// Chinese catalog lacks.
//
// The language is chosen once per page load: the one saved in Settings, else the browser's
// first preferred language that we have, else English. Changing it in Settings saves it and
// reloads the page, so no view has to re-render strings it already built.
import { ZH_CN } from "./i18n/zh-CN.js";

const STORAGE_KEY = "yim.lang";
const CATALOGS = { en: null, "zh-CN": ZH_CN };

// [code, name in its own language], in the order Settings lists them.
export const LANGUAGES = [
  ["en", "English"],
  ["zh-CN", "简体中文"],
];

function fromBrowser() {
  for (const tag of navigator.languages ?? [navigator.language ?? "en"]) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN"; // Traditional readers read Simplified better than English
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

function saved() {
  try {
    const lang = localStorage.getItem(STORAGE_KEY);
    return lang in CATALOGS ? lang : null;
  } catch {
    return null; // storage disabled: fall back to the browser's choice
  }
}

let current = saved() ?? fromBrowser();
document.documentElement.lang = current;

export function language() {
  return current;
}

// Saves the choice and reloads, so every view is built again in the new language.
export function setLanguage(lang) {
  if (!(lang in CATALOGS) || lang === current) return;
  localStorage.setItem(STORAGE_KEY, lang);
  location.reload();
}

function fill(text, vars) {
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

// t("Send") -> "发送"; t("{name} is typing", { name }) fills {name} after translating.
export function t(text, vars) {
  return fill(CATALOGS[current]?.[text] ?? text, vars);
}

// English singular/plural by n; the catalog translates the plural form (Chinese has one).
// tn("{n} member", "{n} members", n) -> "3 members" / "3 位成员". {n} is always filled.
export function tn(one, other, n, vars) {
  const english = n === 1 ? one : other;
  return fill(CATALOGS[current]?.[other] ?? english, { n, ...vars });
}
