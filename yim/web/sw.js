// The service worker of the web client, served at /sw.js so that its scope is the whole
// origin (the page lives at /). It exists for Web Push only (docs/protocol.md §20): it shows
// the notification a push carries while no page of yim is in front, and opens the
// conversation when the notification is clicked. It caches nothing and handles no fetch:
// the page always comes from the node.
//
// The push payload is the one the node's Web Push provider encrypts (yim/push/webpush.py
// payload()): {conv_id, msg_id, badge, title?, body?, data: {conv_id, msg_id, count}},
// ids as decimal strings; `title` is absent when previews are off.

const APP_NAME = "yim"; // the title of a notification without a preview (the page's <title>)

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function parse(data) {
  try {
    const p = data?.json();
    return p && typeof p.conv_id === "string" && /^[0-9]{1,20}$/.test(p.conv_id) ? p : null;
  } catch {
    return null; // not JSON: not a push of ours
  }
}

// The page of the web client: the window at the scope's path (/, its route in the hash).
function isAppPage(client) {
  return new URL(client.url).pathname === new URL(self.registration.scope).pathname;
}

async function appPages() {
  const all = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return all.filter(isAppPage);
}

// The app badge (the total unread count), where the browser has one; a failure changes nothing.
async function setBadge(badge) {
  if (!Number.isInteger(badge) || !("setAppBadge" in self.navigator)) return;
  try {
    if (badge > 0) await self.navigator.setAppBadge(badge);
    else await self.navigator.clearAppBadge();
  } catch {
    // no badge on this platform
  }
}

async function onPush(event) {
  const p = parse(event.data);
  if (!p) return;
  await setBadge(p.badge);
  // A page in front already shows the message as it comes over its connection: no second
  // notification. (The node pushes only to a device that is not connected, so this is the
  // short moment of a page reconnecting.)
  if ((await appPages()).some((c) => c.visibilityState === "visible" && c.focused)) return;
  await self.registration.showNotification(p.title ?? APP_NAME, {
    body: p.body ?? "",
    // The collapse key (docs/protocol.md §20.1), also the tag of the page's own
    // notifications: a conversation shows one notification, the newest.
    tag: `c${p.conv_id}`,
    icon: "/static/icon.svg",
    data: { conv_id: p.conv_id, msg_id: p.msg_id ?? null },
  });
}

// The hash route of a conversation (yim/web/js/app.js).
function convUrl(convId) {
  return new URL(`#/c/${convId}`, self.registration.scope).href;
}

async function onClick(event) {
  const n = event.notification;
  n.close();
  const convId = n.data?.conv_id;
  if (typeof convId !== "string") return;
  const [page] = await appPages();
  if (!page) {
    await self.clients.openWindow(convUrl(convId));
    return;
  }
  // The page routes itself (it may be showing the login form, or a chat with a draft):
  // told, not reloaded. Focus first where the browser allows it.
  page.postMessage({ type: "open_conv", conv_id: convId });
  try {
    await page.focus();
  } catch {
    // not allowed without a user's click on the notification: the page still opens the chat
  }
}

self.addEventListener("push", (event) => event.waitUntil(onPush(event)));
self.addEventListener("notificationclick", (event) => event.waitUntil(onClick(event)));
// The browser renewed or dropped the subscription: open pages send the new one to the node
// (they hold the session token; the worker does not).
self.addEventListener("pushsubscriptionchange", (event) =>
  event.waitUntil(
    appPages().then((pages) => {
      for (const page of pages) page.postMessage({ type: "subscription_changed" });
    }),
  ),
);
