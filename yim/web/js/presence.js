// Presence (docs/protocol.md §8.4): who is online, away or offline, and this page's own
// status. Views ask for the users they show (`watch`); unknown ones are looked up in one
// batched `presence_query`, and `presence` notices keep them current. The server tells
// presence only to friends: everyone else reads as "offline" there, which would be false,
// so `get` gives nothing for users whose presence this user may not see (`canSee`, set
// from the friends list) and the views show no status for them at all.
//
// The page sets its connection `away` while it is hidden and `online` when it is shown.

const QUERY_MAX = 500;

export class Presence extends EventTarget {
  constructor(socket) {
    super();
    this.socket = socket;
    this.states = new Map(); // user_id -> {status, platforms, last_seen}
    this.watched = new Set();
    this.queue = new Set();
    this.timer = 0;
    this.sent = null; // the status last told to the server on this connection
    this.canSee = () => false; // whether the server shows us this user's presence (see above)

    socket.addEventListener("open", () => {
      this.sent = "online"; // every connection starts online
      this.report();
      for (const id of this.watched) this.queue.add(id); // states may have changed while away
      this.flushSoon();
    });
    socket.addEventListener("notice", (e) => {
      if (e.detail.type === "presence") this.set(e.detail.data);
    });
    this._onVisibility = () => this.report();
    document.addEventListener("visibilitychange", this._onVisibility);
  }

  stop() {
    document.removeEventListener("visibilitychange", this._onVisibility);
    clearTimeout(this.timer);
  }

  // "online" | "away" | "offline", or null while unknown or not visible to us.
  status(userId) {
    return this.get(userId)?.status ?? null;
  }

  get(userId) {
    return userId && this.canSee(userId) ? (this.states.get(userId) ?? null) : null;
  }

  watch(userIds) {
    for (const id of userIds) {
      // Not asked for users we may not see: the answer would only be "offline".
      if (!id || this.watched.has(id) || !this.canSee(id)) continue;
      this.watched.add(id);
      this.queue.add(id);
    }
    if (this.queue.size) this.flushSoon();
  }

  // Ask again (a new friend: the server only now lets us see them).
  refresh(userId) {
    this.watched.add(userId);
    this.queue.add(userId);
    this.flushSoon();
  }

  set(p) {
    const old = this.states.get(p.user_id);
    this.states.set(p.user_id, p);
    if (old?.status !== p.status) this.dispatchEvent(new CustomEvent("change", { detail: p.user_id }));
  }

  flushSoon() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.flush();
    }, 30);
  }

  flush() {
    if (!this.socket.isOpen || !this.queue.size) return;
    const ids = [...this.queue].slice(0, QUERY_MAX);
    for (const id of ids) this.queue.delete(id);
    this.socket
      .request("presence_query", { user_ids: ids })
      .then((page) => {
        for (const p of page.presence) this.set(p);
      })
      .catch(() => {
        for (const id of ids) this.queue.add(id); // retried on the next open
      });
    if (this.queue.size) this.flushSoon();
  }

  // Tell the server this connection's status: away while the page is hidden.
  report() {
    if (!this.socket.isOpen) return;
    const status = document.visibilityState === "hidden" ? "away" : "online";
    if (status === this.sent) return;
    this.sent = status;
    this.socket.request("presence_set", { status }).catch(() => {
      this.sent = null;
    });
  }
}
