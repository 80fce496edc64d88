// Web Push: notifications while no page of yim is open (docs/protocol.md §20). When the
// node has a VAPID key (`push_key`) and notifications are allowed, the page registers the
// service worker (/sw.js, which shows the pushes), subscribes this browser with the node's
// key and registers the subscription as this device's pusher (`pusher_set`). That is
// repeated on every page load (a subscription the browser renewed, or a pusher the node
// dropped after its push service said gone, is set again) and when the worker reports a
// changed subscription. Permission is asked by the Notifier (notify.js) on the first send,
// or by the switch in Settings; a change of it (also in the browser's own settings) is
// followed here.
//
// Subscribing goes through the browser's push service (Chromium: Google's FCM): without a
// route to it, subscribe() fails or never answers. That is a state Settings shows, never an
// unhandled rejection; the page's own notifications (notify.js) keep working meanwhile.
import { ApiError } from "./api.js";
import { t } from "./i18n.js";

const PREF_KEY = "yim.push"; // "off": the user turned push off in Settings for this browser
// subscribe() waits on the browser's push service; with no network to it, it may hang.
const SUBSCRIBE_TIMEOUT_MS = 15000;

function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(t("no answer from the browser's push service"))), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function b64url(buffer) {
  return btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

// States (`state`), each with what Settings says and whether the switch can turn it on:
//   checking     the node's key is being read
//   unsupported  this browser has no service workers or Push API (or the page is not https:)
//   server_off   the node sends no Web Push
//   blocked      the user blocked notifications for this site
//   ask          not yet allowed: the switch asks
//   off          turned off in Settings
//   subscribing  registering the worker and subscribing
//   on           subscribed, the node has the pusher
//   failed       the browser could not subscribe (`reason` says why), e.g. no push service reachable
//   error        the node could not be asked or refused (`reason` says why)
export class WebPush extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.state = "checking";
    this.reason = "";
    this.key = null; // the node's VAPID public key, base64url
    this.stopped = false;
    this.run = Promise.resolve(); // one change at a time: a switch click waits for the load's subscribe
    this.onWorkerMessage = (e) => {
      if (e.data?.type === "subscription_changed") this.queue(() => this.update());
    };
    this.permission = null; // PermissionStatus of "notifications", followed while running
    this.onPermission = () => this.queue(() => this.update());
  }

  get supported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  get wanted() {
    return localStorage.getItem(PREF_KEY) !== "off";
  }

  set(state, reason = "") {
    if (this.stopped) return;
    this.state = state;
    this.reason = reason;
    this.dispatchEvent(new Event("change"));
  }

  queue(step) {
    this.run = this.run
      .then(step)
      .catch((err) => this.set(err instanceof ApiError ? "error" : "failed", String(err?.message ?? err)));
    return this.run;
  }

  start() {
    return this.queue(async () => {
      if (!this.supported) return this.set("unsupported");
      try {
        this.key = (await this.api.call("GET", "/api/v1/push/vapid-key")).vapid_public_key ?? null;
      } catch (err) {
        if (err.code === "push_unavailable") return this.set("server_off");
        throw err;
      }
      if (!this.key) return this.set("server_off");
      navigator.serviceWorker.addEventListener("message", this.onWorkerMessage);
      try {
        this.permission = await navigator.permissions.query({ name: "notifications" });
        this.permission.addEventListener("change", this.onPermission);
      } catch {
        // no Permissions API: the state follows the switch and page loads only
      }
      await this.update();
    });
  }

  // Brings the subscription in line with the permission and the user's choice.
  async update() {
    if (this.stopped || !this.key) return;
    const permission = Notification.permission;
    if (permission === "denied") return this.set("blocked");
    if (!this.wanted) return this.set("off");
    if (permission !== "granted") return this.set("ask");
    this.set("subscribing");
    await navigator.serviceWorker.register("/sw.js");
    // subscribe() needs the worker active, which a first registration is not yet
    const reg = await withTimeout(navigator.serviceWorker.ready, SUBSCRIBE_TIMEOUT_MS);
    let sub = await withTimeout(reg.pushManager.getSubscription(), SUBSCRIBE_TIMEOUT_MS);
    if (sub && b64url(sub.options.applicationServerKey) !== this.key) {
      // made with another key (the node's key was replaced): its pushes would be refused
      await sub.unsubscribe();
      sub = null;
    }
    sub ??= await withTimeout(
      reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: this.key }),
      SUBSCRIBE_TIMEOUT_MS,
    );
    if (this.stopped) return; // logged out meanwhile: the node is told nothing more
    const { endpoint, keys } = sub.toJSON();
    await this.api.call("PUT", "/api/v1/me/pusher", { kind: "webpush", endpoint, p256dh: keys.p256dh, auth: keys.auth });
    this.set("on");
  }

  // The switch in Settings, inside its click: the browser shows its permission prompt.
  enable() {
    localStorage.removeItem(PREF_KEY);
    const asking = Notification.permission === "default" ? Notification.requestPermission().catch(() => null) : null;
    return this.queue(async () => {
      await asking;
      await this.update();
    });
  }

  disable() {
    localStorage.setItem(PREF_KEY, "off");
    return this.queue(async () => {
      await this.unsubscribe();
      this.set("off");
      // Should this fail, the node's next push to the ended subscription is answered "gone"
      // by the push service, and the node drops the pusher then.
      await this.api.call("DELETE", "/api/v1/me/pusher", {}).catch(() => {});
    });
  }

  // This browser's subscription ends; the worker stays (it shows nothing without pushes).
  async unsubscribe() {
    const reg = await navigator.serviceWorker.getRegistration("/");
    const sub = await reg?.pushManager.getSubscription();
    await sub?.unsubscribe();
  }

  // At logout: the node drops the device's pusher with the session (docs/protocol.md §20.1),
  // so only the browser's subscription is ended here. Bounded and quiet: logging out never
  // waits long on it nor fails because of it.
  async logout() {
    this.stop();
    if (!this.supported) return;
    await withTimeout(this.unsubscribe(), SUBSCRIBE_TIMEOUT_MS).catch(() => {});
  }

  stop() {
    this.stopped = true;
    if (this.supported) navigator.serviceWorker.removeEventListener("message", this.onWorkerMessage);
    this.permission?.removeEventListener("change", this.onPermission);
  }
}
