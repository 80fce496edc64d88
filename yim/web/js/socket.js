// The WebSocket connection of this device (/ws, JSON frames, docs/protocol.md).
//
// Owns transport concerns only: authenticate first, give every request a `rid` and
// resolve it by its single reply, ping, notice a dead link (no reply in time, browser
// offline) and reconnect with exponential backoff plus jitter.
// A server that accepts the connection but never answers (hung, stopped) is left: the
// WebSocket upgrade, the auth reply and every ping are bounded. The page has one server,
// its own origin; behind a load balancer the reconnect reaches another node.
// Events it dispatches:
//   "open"   detail = the auth reply data (user_id, inbox_seq, heartbeat_s, ...)
//   "event"  detail = a durable inbox event frame {seq, type, data}
//   "notice" detail = an ephemeral notice frame {type, data}
//   "status" detail = {state, retryAt?, reason?}; state is one of
//            connecting | open | waiting | replaced | stopped
//   "unauthorized" detail = {reason, code} (token expired or revoked: log in again; code: the
//            close code, null when the token was refused at `auth`)

const CLOSE_AUTH_FAILED = 4001;
const CLOSE_REPLACED = 4002;
const CLOSE_REVOKED = 4003;
const CLOSE_DISABLED = 4007; // an admin disabled the account: logging in again will not work either
const REQUEST_TIMEOUT_MS = 15000;
const HANDSHAKE_TIMEOUT_MS = 5000; // the WebSocket upgrade, until `open`
const AUTH_TIMEOUT_MS = 10000; // the auth request, until its reply
// Ping at least this often, whatever `heartbeat_s` says (~25 s): a link on which nothing
// at all arrives within PING_TIMEOUT_MS of a ping is dead, so a hung server is left
// within PING_INTERVAL_MAX_MS + PING_TIMEOUT_MS (9 s).
const PING_INTERVAL_MAX_MS = 5000;
const PING_TIMEOUT_MS = 4000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;

export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Socket extends EventTarget {
  constructor(url, getToken) {
    super();
    this.url = url;
    this.getToken = getToken;
    this.ws = null;
    this.state = "idle";
    this.nextRid = 1;
    this.waiting = new Map(); // rid -> {resolve, reject, timer}
    this.attempts = 0;
    this.retryTimer = 0;
    this.heartbeatTimer = 0;
    this.handshakeTimer = 0;
    this.pingTimer = 0;
    this.lastFrameAt = 0; // performance.now() of the last frame received (liveness)
    this.auth = null;
    this._onOnline = () => this.reconnectNow();
    this._onOffline = () => this.drop("browser went offline");
  }

  get isOpen() {
    return this.state === "open";
  }

  start() {
    window.addEventListener("online", this._onOnline);
    window.addEventListener("offline", this._onOffline);
    this.connect();
  }

  stop() {
    window.removeEventListener("online", this._onOnline);
    window.removeEventListener("offline", this._onOffline);
    clearTimeout(this.retryTimer);
    this.setState("stopped");
    this.teardown(1000, "client stopped");
  }

  // Reconnect at once (after the browser comes back online, or on the user's request).
  reconnectNow() {
    if (this.state === "waiting" || this.state === "replaced") {
      clearTimeout(this.retryTimer);
      this.attempts = 0;
      this.connect();
    }
  }

  // Close a link that looks dead; the close handler schedules the reconnect.
  drop(reason) {
    if (this.ws && this.state !== "stopped") {
      this.teardown(4000, reason);
      this.scheduleReconnect(reason);
    }
  }

  request(op, fields = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.isOpen) return Promise.reject(new RequestError("disconnected", "not connected"));
    return this.rawRequest(op, fields, timeoutMs);
  }

  rawRequest(op, fields, timeoutMs) {
    const rid = this.nextRid++;
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(rid);
        reject(new RequestError("timeout", `no reply to ${op} in ${timeoutMs} ms`));
        if (this.ws === ws) this.drop("request timed out"); // pseudo-online: reconnect
      }, timeoutMs);
      this.waiting.set(rid, { resolve, reject, timer });
      ws.send(JSON.stringify({ op, rid, ...fields }));
    });
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.state === "stopped") return;
    this.teardown(1000, "reconnecting");
    this.setState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.handshakeTimer = setTimeout(() => {
      if (this.ws === ws) this.drop("no answer to the WebSocket upgrade");
    }, HANDSHAKE_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(this.handshakeTimer);
      this.authenticate(ws);
    };
    ws.onmessage = (e) => {
      this.lastFrameAt = performance.now();
      this.onFrame(e.data);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return; // an old socket we already gave up on
      this.onClosed(e.code, e.reason);
    };
  }

  async authenticate(ws) {
    let data;
    try {
      data = await this.rawRequest("auth", { token: this.getToken() }, AUTH_TIMEOUT_MS);
    } catch (err) {
      if (err.code === "unauthorized") this.fail(err.message);
      return; // otherwise the close handler reconnects
    }
    if (this.ws !== ws) return;
    this.auth = data;
    this.attempts = 0;
    this.setState("open");
    this.startHeartbeat(data.heartbeat_s);
    this.dispatchEvent(new CustomEvent("open", { detail: data }));
  }

  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.t === "ok" || frame.t === "err") {
      const w = this.waiting.get(frame.rid);
      if (!w) return;
      this.waiting.delete(frame.rid);
      clearTimeout(w.timer);
      if (frame.t === "ok") w.resolve(frame.data ?? null);
      else w.reject(new RequestError(frame.code, frame.message));
    } else if (frame.t === "event") {
      this.dispatchEvent(new CustomEvent("event", { detail: frame }));
    } else if (frame.t === "notice") {
      this.dispatchEvent(new CustomEvent("notice", { detail: frame }));
    }
  }

  onClosed(code, reason) {
    this.stopHeartbeat();
    this.rejectAll();
    this.ws = null;
    if (this.state === "stopped") return;
    if (code === CLOSE_AUTH_FAILED || code === CLOSE_REVOKED || code === CLOSE_DISABLED) {
      this.fail(reason || "session ended", code);
    } else if (code === CLOSE_REPLACED) {
      // The same device connected again, in another tab: do not fight over the slot.
      this.setState("replaced", { reason });
    } else {
      this.scheduleReconnect(reason || `closed (${code})`);
    }
  }

  // `code`: the close code that ended the session (4003, 4007, …), or null when the token
  // itself was refused; the page words its notice after it.
  fail(reason, code = null) {
    this.setState("stopped", { reason });
    this.teardown(1000, "unauthorized");
    this.dispatchEvent(new CustomEvent("unauthorized", { detail: { reason, code } }));
  }

  scheduleReconnect(reason) {
    if (this.state === "stopped" || this.state === "waiting") return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempts);
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.attempts += 1;
    this.setState("waiting", { retryAt: Date.now() + delay, reason });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  teardown(code, reason) {
    this.stopHeartbeat();
    clearTimeout(this.handshakeTimer);
    const ws = this.ws;
    this.ws = null;
    this.rejectAll();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  rejectAll() {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new RequestError("disconnected", "connection lost"));
    }
    this.waiting.clear();
  }

  startHeartbeat(seconds) {
    this.stopHeartbeat();
    const every = Math.min(Math.max(1, seconds) * 1000, PING_INTERVAL_MAX_MS);
    this.heartbeatTimer = setInterval(() => this.ping(), every);
  }

  // Any frame counts as a sign of life, not only the pong: a busy server may queue the
  // pong behind a large sync page. A pong that never comes still drops the link after
  // REQUEST_TIMEOUT_MS (rawRequest).
  ping() {
    const ws = this.ws;
    if (!this.isOpen || !ws) return;
    const sentAt = performance.now();
    this.rawRequest("ping", {}, REQUEST_TIMEOUT_MS).catch(() => {});
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => {
      if (this.ws === ws && this.lastFrameAt <= sentAt) this.drop("no answer to ping");
    }, PING_TIMEOUT_MS);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.pingTimer);
    this.heartbeatTimer = this.pingTimer = 0;
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }
}

export function socketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}
