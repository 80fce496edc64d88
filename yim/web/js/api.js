// HTTP API client (/api/v1/, docs/protocol.md). Every method resolves to the decoded
// JSON body or rejects with an ApiError carrying the server's stable error `code`.
import { t } from "./i18n.js";

// A node can hang without closing anything (stopped, wedged, overloaded while its kernel
// still accepts connections): without a bound, a button would spin for as long as the node
// is stuck. A JSON request that has no answer in this long fails with code "timeout".
// Uploads and downloads are not bounded by it: their time grows with the file.
export const REQUEST_TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, when the server asks to wait (rate_limited)
  }
}

function requestFailed(error) {
  if (error?.name === "TimeoutError") {
    return new ApiError(0, "timeout", t("The server did not answer in time. Try again in a moment."));
  }
  return new ApiError(0, "network", t("Cannot reach the server. Check your connection."));
}

export class Api {
  constructor(base = "", { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    this.base = base;
    this.token = null;
    this.timeoutMs = timeoutMs;
  }

  async call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: AbortSignal.timeout(this.timeoutMs), // bounds the body's arrival too
      });
    } catch (e) {
      throw requestFailed(e);
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      if (e?.name === "TimeoutError") throw requestFailed(e);
      // otherwise a proxy's HTML error page, or an empty body
    }
    if (!res.ok) {
      const retry = Number(data?.retry_after ?? res.headers.get("Retry-After"));
      throw new ApiError(
        res.status,
        data?.code ?? "http_" + res.status,
        data?.message ?? res.statusText,
        Number.isFinite(retry) && retry > 0 ? retry : null,
      );
    }
    return data;
  }

  register(username, password, displayName) {
    return this.call("POST", "/api/v1/accounts", { username, password, display_name: displayName });
  }

  login(username, password, deviceId, deviceName) {
    return this.call("POST", "/api/v1/sessions", {
      username,
      password,
      device_id: deviceId,
      platform: "web",
      device_name: deviceName,
    });
  }

  logout() {
    return this.call("DELETE", "/api/v1/sessions/current");
  }

  me() {
    return this.call("GET", "/api/v1/me");
  }

  // Self-service (docs/protocol.md §19.4). Resolves to {revoked}: the other sessions ended.
  changePassword(oldPassword, newPassword) {
    return this.call("PUT", "/api/v1/me/password", { old_password: oldPassword, new_password: newPassword });
  }

  // Resolves to the User; a blank name means the username.
  setDisplayName(displayName) {
    return this.call("PATCH", "/api/v1/me", { display_name: displayName });
  }

  // Deleting one's own account (docs/protocol.md §19.8): resolves to {due_at}, when it runs;
  // a login before then cancels it. accountDeletion() resolves to {due_at} or {due_at: null}.
  deleteAccount(password) {
    return this.call("POST", "/api/v1/me/deletion", { password });
  }

  accountDeletion() {
    return this.call("GET", "/api/v1/me/deletion");
  }

  // Resolves to the User; `mediaId` of an image I uploaded, "" for no avatar.
  setAvatar(mediaId) {
    return this.call("PATCH", "/api/v1/me", { avatar: mediaId });
  }

  // Server administration (docs/protocol.md §19): `path` under /api/v1/admin, `query` for
  // GETs (ids stay decimal strings), `body` for changes. A non-admin gets code "forbidden".
  admin(method, path, { query = null, body } = {}) {
    const q = query ? "?" + new URLSearchParams(Object.entries(query).filter(([, v]) => v != null && v !== "")) : "";
    return this.call(method, "/api/v1/admin" + path + q, body);
  }

  userByName(username) {
    return this.call("GET", "/api/v1/users?username=" + encodeURIComponent(username));
  }

  user(userId) {
    return this.call("GET", "/api/v1/users/" + encodeURIComponent(userId));
  }

  // `before` is a 64-bit id and must stay a decimal string: a JS number would round it.
  conversations(before, limit = 50) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before != null) q.set("before", String(before));
    return this.call("GET", "/api/v1/conversations?" + q);
  }

  // Media (POST /api/v1/media): the raw bytes as the body, not multipart. Resolves to Media.
  async upload(file, kind, name) {
    const q = new URLSearchParams({ kind, name: name ?? file.name ?? "" });
    let res;
    try {
      res = await fetch(this.base + "/api/v1/media?" + q, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json" },
        body: file,
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network", t("Cannot reach the server. Check your connection."));
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, data?.code ?? "http_" + res.status, data?.message ?? res.statusText);
    return data;
  }

  // A download that needs the bearer token (media): the bytes as a Blob.
  async blob(path) {
    let res;
    try {
      res = await fetch(this.base + path, { headers: { Authorization: `Bearer ${this.token}` } });
    } catch {
      throw new ApiError(0, "network", t("Cannot reach the server. Check your connection."));
    }
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      const retry = Number(data?.retry_after ?? res.headers.get("Retry-After"));
      throw new ApiError(
        res.status,
        data?.code ?? "http_" + res.status,
        data?.message ?? res.statusText,
        Number.isFinite(retry) && retry > 0 ? retry : null,
      );
    }
    return res.blob();
  }
}
