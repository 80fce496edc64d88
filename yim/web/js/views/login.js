// Log in, or create an account and log in.
import { h } from "../dom.js";

const MESSAGES = {
  unauthorized: "Wrong username or password.",
  username_taken: "That username is taken. Pick another one.",
  network: "Cannot reach the server. Check your connection.",
};

export function loginView({ api, deviceId, onLoggedIn, notice }) {
  let mode = "login";
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    minlength: 3,
    maxlength: 32,
    pattern: "[A-Za-z0-9_.\\-]+",
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
  const nameRow = h("label", { class: "field", hidden: true }, h("span", null, "Display name (optional)"), displayName);
  const error = h("p", { class: "form-error", role: "alert" }, notice ?? "");
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const hint = h("span", null, "New here?");
  const toggle = h(
    "button",
    { type: "button", class: "link", onclick: () => setMode(mode === "login" ? "register" : "login") },
    "Create an account",
  );
  const title = h("p", { class: "login-sub" }, "Log in to chat");

  function setMode(next) {
    mode = next;
    const reg = mode === "register";
    nameRow.hidden = !reg;
    password.autocomplete = reg ? "new-password" : "current-password";
    password.minLength = reg ? 8 : 1;
    submit.textContent = reg ? "Create account" : "Log in";
    title.textContent = reg ? "Create an account" : "Log in to chat";
    hint.textContent = reg ? "Have an account?" : "New here?";
    toggle.textContent = reg ? "Log in" : "Create an account";
    error.textContent = "";
  }

  async function onSubmit(e) {
    e.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const name = username.value.trim();
    try {
      if (mode === "register") await api.register(name, password.value, displayName.value.trim());
      const login = await api.login(name, password.value, deviceId, deviceLabel());
      onLoggedIn({ ...login, username: name });
    } catch (err) {
      error.textContent = MESSAGES[err.code] ?? err.message;
      submit.disabled = false;
    }
  }

  return h(
    "main",
    { class: "login" },
    h(
      "form",
      { class: "login-card", onsubmit: onSubmit, novalidate: false },
      h("h1", { class: "brand" }, h("span", { class: "brand-mark" }, "y"), "yim"),
      title,
      h("label", { class: "field" }, h("span", null, "Username"), username),
      h("label", { class: "field" }, h("span", null, "Password"), password),
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
  const browser = BROWSERS.find(([re]) => re.test(ua))?.[1] ?? "Browser";
  const os = SYSTEMS.find(([re]) => re.test(ua))?.[1];
  return os ? `${browser} on ${os}` : browser;
}
