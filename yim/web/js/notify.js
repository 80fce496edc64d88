// Desktop notifications while this tab is hidden: the browser's Notification API, fed by
// the messages this tab receives over its WebSocket (no push service, no service worker:
// with the tab closed, nothing shows).
//
// Permission is asked once, when the user first sends a message: inside that click or key
// press (browsers ignore or quieten requests without one), at a moment the user has shown they chat here,
// and never on page load. Only others' messages that count as unread, and only new ones
// (not a backlog the tab syncs after sleeping), notify; one notification per conversation,
// the newer replacing the older (same tag), closed when the tab is shown again. A conversation
// muted for push (pushprefs.js) is muted here too: "Nothing" shows nothing, "Mentions only"
// only messages that mention me.
import { displayName, messageText } from "./format.js";
import { t } from "./i18n.js";

const FRESH_MS = 60_000; // older messages arrive by sync: the user will see them in the list

export class Notifier {
  constructor(store, { onOpen, prefs = null }) {
    this.store = store;
    this.prefs = prefs;
    this.onOpen = onOpen;
    this.asked = false;
    this.shown = new Map(); // conv_id -> Notification
    this.latest = new Map(); // conv_id -> seq of the newest message to notify of
    this.onMessage = (e) => this.notify(e.detail).catch(() => {});
    this.onSend = () => this.ask();
    this.onVisibility = () => {
      if (document.visibilityState === "visible") this.closeAll();
    };
    store.addEventListener("message", this.onMessage);
    store.addEventListener("sending", this.onSend);
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  get supported() {
    return "Notification" in window;
  }

  ask() {
    if (this.asked || !this.supported || Notification.permission !== "default") return;
    this.asked = true;
    Notification.requestPermission().catch(() => {});
  }

  async notify(m) {
    if (!this.supported || Notification.permission !== "granted") return;
    if (document.visibilityState !== "hidden") return;
    if (!this.store.countable(m) || m.created_at < Date.now() - FRESH_MS) return;
    if (this.prefs && !this.prefs.notifies(m)) return; // muted: leave an earlier mention's notification up
    this.latest.set(m.conv_id, m.seq);
    // A first message from someone new: their name is fetched before it shows. Awaited even
    // when known, so the rest runs after the whole dispatch that announced the message.
    const user = await (this.store.user(m.sender_id) ?? this.store.api.user(m.sender_id).catch(() => null));
    // Still hidden, and still the newest of its conversation (a later one may have shown meanwhile)?
    if (document.visibilityState !== "hidden" || this.latest.get(m.conv_id) !== m.seq) return;
    // Asked again after that: a group_message notice tells prefs that its group fans out on
    // read (mentions only by default) only after this message was announced.
    if (this.prefs && !this.prefs.notifies(m)) return;
    const conv = this.store.convs.get(m.conv_id);
    const sender = user ? displayName(user) : t("Someone");
    const title = conv?.type === "group" && conv.name ? t("{sender} in {group}", { sender, group: conv.name }) : sender;
    const n = new Notification(title, { body: messageText(m), tag: `c${m.conv_id}` });
    n.onclick = () => {
      window.focus();
      this.onOpen(m.conv_id);
      n.close();
    };
    this.shown.get(m.conv_id)?.close();
    this.shown.set(m.conv_id, n);
  }

  closeAll() {
    for (const n of this.shown.values()) n.close();
    this.shown.clear();
  }

  stop() {
    this.store.removeEventListener("message", this.onMessage);
    this.store.removeEventListener("sending", this.onSend);
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.closeAll();
  }
}
