// Entry point: the session in localStorage, the hash router, and the wiring of the
// modules (api: HTTP, socket: WebSocket transport, store: state + sync, one model per
// feature: presence, typing, relations, groups, media, service; views: DOM).
//
// Routes: #/c/<conv_id> a conversation, #/u/<user_id> a draft with a user,
// #/s/<shop_id> the chat with a shop (customer service), #/settings my settings and
// #/admin the server administration (server admins only).
import { Api } from "./api.js";
import { setAvatarMedia, watchProfiles } from "./avatar.js";
import { h } from "./dom.js";
import { Groups } from "./groups.js";
import { t } from "./i18n.js";
import { randomId } from "./ids.js";
import { Media } from "./media.js";
import { Notifier } from "./notify.js";
import { PushPrefs } from "./pushprefs.js";
import { Presence } from "./presence.js";
import { Relations } from "./relations.js";
import { Service } from "./service.js";
import { Socket, socketUrl } from "./socket.js";
import { Store } from "./store.js";
import { Typing } from "./typing.js";
import { WebPush } from "./webpush.js";
import { AdminView } from "./views/admin.js";
import { ChatView } from "./views/chat.js";
import { openGroupInfo } from "./views/groupinfo.js";
import { loginView } from "./views/login.js";
import { SettingsView } from "./views/settings.js";
import { Sidebar } from "./views/sidebar.js";
import { toast } from "./views/toast.js";
import { watchReportOutcomes } from "./views/reports.js";
import { userMenu } from "./views/usermenu.js";

const SESSION_KEY = "yim.session";
const DEVICE_KEY = "yim.device_id";
const root = document.getElementById("app");
const api = new Api("");

// One device id per browser profile, kept across logins (the server keys sessions and
// read state by (user, device)).
function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = "web-" + randomId(10);
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
    if (s?.token && s.expires_at > Date.now() + 60000) return s;
  } catch {
    // unreadable: log in again
  }
  return null;
}

function showLogin(notice) {
  api.token = null;
  root.className = "";
  root.replaceChildren(
    loginView({
      api,
      deviceId: deviceId(),
      notice,
      onLoggedIn(login) {
        const session = { ...login, display_name: login.username };
        delete session.deletion_cancelled; // said once, below; not kept with the session
        localStorage.setItem(SESSION_KEY, JSON.stringify(session));
        startMain(session);
        if (login.deletion_cancelled) {
          toast(t("You logged in, so your account's pending deletion is cancelled."));
        }
      },
    }),
  );
  root.querySelector("input")?.focus();
}

let current = null; // {socket, store, stop}

const SESSION_ENDED = t("Your session has ended. Please log in again.");

// What the login form says when the server ended the session (close codes, docs/protocol.md
// §5.4 and §19.2): a disabled account must not read as an expired token.
function endedNotice({ code, reason: text } = {}) {
  const reason = String(text ?? "").replace(/^session revoked: /, "");
  if (code === 4007 && reason === "account erased") {
    return t("Your session has ended: this account was deleted.");
  }
  if (code === 4007) {
    return t(
      "Your session has ended: a server administrator disabled this account. You cannot log in until it is enabled again.",
    );
  }
  if (code === 4003 && reason === "password changed") {
    return t("Your session has ended: the password was changed in another session. Log in with the new password.");
  }
  if (code === 4003 && reason === "password reset by an admin") {
    return t("Your session has ended: a server administrator reset your password. Log in with the new one.");
  }
  if (code === 4003 && reason === "signed out by an admin") {
    return t("Your session has ended: a server administrator signed this device out.");
  }
  return SESSION_ENDED;
}

function startMain(session) {
  api.token = session.token;
  const socket = new Socket(socketUrl(), () => api.token);
  const store = new Store(api, socket, session);
  const presence = new Presence(socket);
  const typing = new Typing(socket, store);
  const relations = new Relations(socket, store, presence);
  // The server shows presence to friends only (and oneself): others read as "offline".
  presence.canSee = (userId) => userId === store.me.user_id || relations.isFriend(userId);
  const groups = new Groups(socket, store, api);
  const service = new Service(socket, store);
  const media = new Media(api);
  setAvatarMedia(media);
  const pushPrefs = new PushPrefs(socket, store, groups);
  const notifier = new Notifier(store, { onOpen: (convId) => (location.hash = `#/c/${convId}`), prefs: pushPrefs });
  const webpush = new WebPush(api);
  let ended = false;
  let pendingJump = null; // {conv_id, seq}: a search hit to show once its chat is open

  const end = (notice) => {
    if (ended) return;
    ended = true;
    socket.stop();
    presence.stop();
    service.stop();
    notifier.stop();
    pushPrefs.stop();
    webpush.stop();
    chat.stop();
    setAvatarMedia(null);
    window.removeEventListener("hashchange", route);
    document.removeEventListener("visibilitychange", onVisibility);
    localStorage.removeItem(SESSION_KEY);
    history.replaceState(null, "", location.pathname);
    current = null;
    showLogin(notice);
  };
  const logout = async () => {
    socket.stop(); // first: the server closes revoked sessions' sockets, which is no error here
    await webpush.logout();
    try {
      await api.logout();
    } catch {
      // the token is dropped locally either way
    }
    end();
  };

  const openUser = (user) => {
    const conv = store.convWithPeer(user.user_id);
    location.hash = conv ? `#/c/${conv.conv_id}` : `#/u/${user.user_id}`;
  };
  const onUserMenu = (user, at) =>
    userMenu({ relations, onOpenUser: openUser, inChat: chat.peer()?.user_id === user.user_id }, user, at);
  const chat = new ChatView({
    store,
    presence,
    typing,
    groups,
    media,
    relations,
    service,
    onGroupInfo: (convId) => openGroupInfo({ store, groups, pushPrefs }, convId),
    onUserMenu,
    pushPrefs,
  });
  const settings = new SettingsView({
    store,
    api,
    service,
    webpush,
    pushPrefs,
    // My new name: the sidebar, the chats and the saved session show it at once.
    onProfile(user) {
      Object.assign(store.me, user);
      store.rememberUser({ ...store.users.get(user.user_id), ...user });
      localStorage.setItem(SESSION_KEY, JSON.stringify({ ...session, display_name: user.display_name }));
      sidebar.renderMe();
      sidebar.render();
      if (chat.route) chat.render();
    },
  });
  const admin = new AdminView({ api, store, onForbidden: () => setAdmin(false) });
  // Whether I am a server admin: the user object does not say, so one cheap admin read
  // decides (403 forbidden: no). An admin op answering forbidden later hides the tab again.
  const setAdmin = (on) => {
    sidebar.setAdmin(on);
    if (!on && location.hash === "#/admin") location.replace("#/");
  };
  const sidebar = new Sidebar({
    store,
    api,
    presence,
    relations,
    groups,
    service,
    onLogout: logout,
    onOpenUser: openUser,
    pushPrefs,
    onUserMenu,
    // Checked before the chat opens: a mistyped id is refused here, not after the first message.
    async onOpenShop(shopId) {
      if (!/^[0-9]{1,20}$/.test(shopId)) throw new Error(t("A shop id is a number."));
      const shop = await service.lookupShop(shopId);
      if (!shop) throw new Error(t("There is no shop with id {id}. Check the number with the shop.", { id: shopId }));
      location.hash = `#/s/${shopId}`;
    },
    onSearchHit(convId, seq) {
      pendingJump = { conv_id: convId, seq };
      if (location.hash === `#/c/${convId}`) route();
      else location.hash = `#/c/${convId}`;
    },
  });
  root.className = "";
  const shell = h("div", { class: "shell" }, sidebar.el, chat.el);
  root.replaceChildren(shell);

  // The right-hand side shows the chat, or one of the pages in its place.
  const showPage = (page) => {
    const want = page?.el ?? chat.el;
    if (shell.lastElementChild !== want) shell.replaceChild(want, shell.lastElementChild);
    shell.classList.toggle("chat-open", !!page);
    sidebar.activePage = page === admin ? "admin" : page === settings ? "settings" : null;
    if (page) {
      sidebar.activeConv = null;
      chat.show(null);
      page.show();
      sidebar.render();
      updateVisible();
    }
  };

  const route = async () => {
    if (location.hash === "#/settings" || (location.hash === "#/admin" && sidebar.isAdmin)) {
      return showPage(location.hash === "#/admin" ? admin : settings);
    }
    if (location.hash === "#/admin" && sidebar.isAdmin === false) return location.replace("#/");
    showPage(null);
    const [, kind, id] = location.hash.match(/^#\/([cus])\/([0-9]{1,20})$/) ?? [];
    let r = null;
    if (kind === "c") r = { conv_id: id };
    else if (kind === "s") {
      // My one conversation with this shop, if I ever wrote to it.
      const existing = socket.isOpen ? await service.customerStatus(id).catch(() => null) : null;
      if (existing) return location.replace(`#/c/${existing.conv_id}`);
      // Its name for the header, and whether it exists at all (the chat says so if not).
      if (socket.isOpen) await service.lookupShop(id).catch(() => null);
      r = { shop_id: id };
    } else if (kind === "u") {
      const existing = store.convWithPeer(id);
      if (existing) return location.replace(`#/c/${existing.conv_id}`);
      let user = store.users.get(id);
      if (!user) {
        try {
          user = await api.user(id);
          store.rememberUser(user);
        } catch {
          return location.replace("#/");
        }
      }
      r = { user };
    }
    root.querySelector(".shell").classList.toggle("chat-open", !!r);
    sidebar.activeConv = r?.conv_id ?? null;
    chat.show(r);
    if (r?.conv_id && pendingJump?.conv_id === r.conv_id) chat.jumpTo(pendingJump.seq);
    pendingJump = null;
    sidebar.render();
    updateVisible();
  };
  const updateVisible = () => {
    store.setVisible(document.visibilityState === "visible" ? (chat.route?.conv_id ?? null) : null);
  };
  const onVisibility = () => updateVisible();

  let frame = 0;
  let pending = null;
  store.addEventListener("change", (e) => {
    const d = e.detail;
    if (!pending) pending = { list: false, status: false, convs: new Set() };
    pending.list ||= d.list || d.synced;
    pending.status ||= d.status;
    for (const c of d.convs) pending.convs.add(c);
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        const p = pending;
        pending = null;
        if (p.list || p.status) sidebar.render();
        const draftPeer = chat.route?.user;
        const started = draftPeer && store.convWithPeer(draftPeer.user_id);
        if (started && !store.outboxFor(null, draftPeer.user_id).length) location.replace(`#/c/${started.conv_id}`);
        else if (chat.route) chat.render();
      });
    }
  });
  store.addEventListener("sent", (e) => {
    // The first message to someone (or to a shop) created the conversation: show it under its id.
    const { item, msg } = e.detail;
    if (item.shop_id) {
      service.rememberShop(msg.conv_id, item.shop_id);
      // Named after the shop at once (the `conversation` reply confirms the name later).
      const conv = store.convs.get(msg.conv_id);
      const shop = service.shopInfo(item.shop_id);
      if (conv && !conv.name && shop) conv.name = shop.name;
    }
    if (chat.route?.user && item.to === chat.route.user.user_id) location.replace(`#/c/${msg.conv_id}`);
    if (chat.route?.shop_id && item.shop_id === chat.route.shop_id) location.replace(`#/c/${msg.conv_id}`);
  });
  // Feature models: re-render what shows them.
  const renderSoon = (() => {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        sidebar.render();
      });
    };
  })();
  presence.addEventListener("change", renderSoon);
  watchReportOutcomes(socket); // a toast when one of my reports is resolved
  // Someone's new name or avatar (a `profile` notice): every view that shows them.
  watchProfiles({ socket, store, relations }, (user) => {
    if (user.user_id === store.me.user_id) {
      sidebar.renderMe();
      settings.renderAvatar(); // changed on another of my devices
    }
    renderSoon();
  });
  relations.addEventListener("change", renderSoon);
  service.addEventListener("change", renderSoon);
  pushPrefs.addEventListener("change", renderSoon); // the list's muted icons
  socket.addEventListener("unauthorized", (e) => end(endedNotice(e.detail)));
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", onVisibility);

  current = { socket, store, sidebar, chat, presence, typing, relations, groups, service, media, notifier, settings, admin, pushPrefs };
  current.webpush = webpush;
  window.yim = current; // for the browser console
  sidebar.render();
  route();
  socket.start();
  webpush.start();

  // Refresh the profile (display name) in the background; a 401 means the session is gone.
  api
    .me()
    .then((me) => {
      Object.assign(store.me, me);
      localStorage.setItem(SESSION_KEY, JSON.stringify({ ...session, display_name: me.display_name }));
      sidebar.renderMe();
    })
    .catch((err) => {
      if (err.code === "unauthorized") end(SESSION_ENDED);
    });
  api.admin("GET", "/users", { query: { limit: 1 } }).then(
    () => {
      if (ended) return;
      setAdmin(true);
      if (location.hash === "#/admin") route();
    },
    (err) => {
      // not an admin; with no answer at all, no Admin tab either (a reload asks again)
      if (!ended && err.code === "forbidden") setAdmin(false);
    },
  );
}

// A click on a push notification (sw.js) while this page is open: show that conversation
// (after logging in, if the login form is showing).
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.addEventListener("message", (e) => {
    const convId = e.data?.type === "open_conv" ? String(e.data.conv_id) : "";
    if (/^[0-9]{1,20}$/.test(convId)) location.hash = `#/c/${convId}`;
  });
  navigator.serviceWorker.startMessages();
}

const saved = loadSession();
if (saved) startMain(saved);
else showLogin();
