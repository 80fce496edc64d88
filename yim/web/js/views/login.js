// Log in, or create an account and log in.
import { h } from "../dom.js";
import { errorText as codeText } from "../errors.js";
import { t, tn } from "../i18n.js";

// The server's rules for a new account (docs/protocol.md §13.3), said the way people read
// them: the browser's own "Please match the requested format." does not say what is wrong.
const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const USERNAME_RULE = t(
  "A username is 3 to 32 characters long and uses only letters a-z or A-Z, digits 0-9, and _ . - (no spaces).",
);
const PASSWORD_MIN = 8;
const PASSWORD_RULE = t("A password has at least {n} characters.", { n: PASSWORD_MIN });

// "45 seconds", "10 minutes", "2 hours": how long a lockout lasts, rounded up.
export function waitText(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return tn("{n} second", "{n} seconds", s);
  const m = Math.ceil(s / 60);
  if (m < 60) return tn("{n} minute", "{n} minutes", m);
  const hours = Math.ceil(m / 60);
  return tn("{n} hour", "{n} hours", hours);
}

function errorText(err, mode) {
  if (err.code === "rate_limited") {
    const what = mode === "register" ? t("Too many attempts from this network.") : t("Too many failed log-in attempts.");
    return err.retryAfter
      ? what + " " + t("Try again in {wait}.", { wait: waitText(err.retryAfter) })
      : what + " " + t("Wait a few minutes and try again.");
  }
  if (err.code === "bad_request" && mode === "register") {
    if (/username/.test(err.message)) return USERNAME_RULE;
    if (/password/.test(err.message)) return PASSWORD_RULE;
  }
  const text = codeText(err);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function loginView({ api, deviceId, onLoggedIn, notice }) {
  let mode = "login";
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    maxlength: 32,
    spellcheck: "false",
    autocapitalize: "off",
  });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    maxlength: 256,
  });
  const displayName = h("input", { name: "display_name", maxlength: 64, autocomplete: "nickname" });
  const nameRow = h("label", { class: "field", hidden: true }, h("span", null, t("Display name (optional)")), displayName);
  const error = h("p", { class: "form-error", role: "alert" }, notice ?? "");
  const submit = h("button", { type: "submit", class: "primary" }, t("Log in"));
  const hint = h("span", null, t("New here?"));
  const toggle = h(
    "button",
    { type: "button", class: "link", onclick: () => setMode(mode === "login" ? "register" : "login") },
    t("Create an account"),
  );
  const title = h("p", { class: "login-sub" }, t("Log in to chat"));

  function setMode(next) {
    mode = next;
    const reg = mode === "register";
    nameRow.hidden = !reg;
    password.autocomplete = reg ? "new-password" : "current-password";
    submit.textContent = reg ? t("Create account") : t("Log in");
    title.textContent = reg ? t("Create an account") : t("Log in to chat");
    hint.textContent = reg ? t("Have an account?") : t("New here?");
    toggle.textContent = reg ? t("Log in") : t("Create an account");
    error.textContent = "";
  }

  // Checked here rather than by the browser (the form has novalidate), to say what is wrong.
  function invalid(name) {
    if (!name || !password.value) {
      const text = mode === "register" ? t("Choose a username and a password.") : t("Enter your username and password.");
      return [name ? password : username, text];
    }
    if (mode !== "register") return null;
    if (!USERNAME_RE.test(name)) return [username, USERNAME_RULE];
    if (password.value.length < PASSWORD_MIN) return [password, PASSWORD_RULE];
    return null;
  }

  async function onSubmit(e) {
    e.preventDefault();
    error.textContent = "";
    username.removeAttribute("aria-invalid");
    password.removeAttribute("aria-invalid");
    const name = username.value.trim();
    const bad = invalid(name);
    if (bad) {
      bad[0].setAttribute("aria-invalid", "true");
      bad[0].focus();
      error.textContent = bad[1];
      return;
    }
    submit.disabled = true;
    try {
      if (mode === "register") await api.register(name, password.value, displayName.value.trim());
      const login = await api.login(name, password.value, deviceId, deviceLabel());
      onLoggedIn({ ...login, username: name });
    } catch (err) {
      error.textContent = errorText(err, mode);
      submit.disabled = false;
    }
  }

  return h(
    "main",
    { class: "login" },
    h(
      "form",
      { class: "login-card", onsubmit: onSubmit, novalidate: true },
      h("h1", { class: "brand" }, h("span", { class: "brand-mark" }, "y"), "yim"),
      title,
      h("label", { class: "field" }, h("span", null, t("Username")), username),
      h("label", { class: "field" }, h("span", null, t("Password")), password),
      nameRow,
      error,
      submit,
      h("p", { class: "login-switch" }, hint, " ", toggle),
    ),
  );
}

const BROWSERS = [
  [/Firefox\//, "Firefox"],
  [/Edg\//, "Edge"],
  [/Chrom/, "Chrome"],
  [/Safari\//, "Safari"],
];
const SYSTEMS = [
  [/Android/, "Android"],
  [/iPhone|iPad/, "iOS"],
  [/Mac OS/, "macOS"],
  [/Windows/, "Windows"],
  [/Linux/, "Linux"],
];

// A readable name for the device list ("Firefox on Linux").
function deviceLabel() {
  const ua = navigator.userAgent;
  const browser = BROWSERS.find(([re]) => re.test(ua))?.[1] ?? t("Browser");
  const os = SYSTEMS.find(([re]) => re.test(ua))?.[1];
  return os ? t("{browser} on {os}", { browser, os }) : browser;
}
