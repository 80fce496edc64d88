// The relation chain (docs/protocol.md §8): friends, friend requests both ways, blocks.
// Lists are loaded when the connection opens and reloaded when a `relation` inbox event
// says they changed (on any of the user's devices, this page included).

const PAGE = 200;
const MAX_PAGES = 10;

const AFFECTS = {
  friend_request: ["incoming"],
  friend_request_sent: ["outgoing"],
  friend_added: ["friends", "incoming", "outgoing"],
  friend_request_rejected: ["incoming", "outgoing"],
  friend_request_canceled: ["incoming", "outgoing"],
  friend_removed: ["friends"],
  blocked: ["blocks", "friends", "incoming", "outgoing"],
  unblocked: ["blocks"],
};

export class Relations extends EventTarget {
  constructor(socket, store, presence) {
    super();
    this.socket = socket;
    this.store = store;
    this.presence = presence;
    this.friends = new Map(); // user_id -> Friend {user, remark, tags, since}
    this.incoming = []; // pending FriendRequest sent to me, newest first
    this.outgoing = [];
    this.blocked = new Map(); // user_id -> User
    this.loaded = false;
    this.stale = new Set();
    this.timer = 0;

    socket.addEventListener("open", () => this.reload(["friends", "incoming", "outgoing", "blocks"]));
    store.addEventListener("inbox", (e) => {
      if (e.detail.type !== "relation") return;
      const d = e.detail.data ?? {};
      // A new friend's presence is visible now; a former one's is not (reads offline).
      if (["friend_added", "friend_removed", "blocked"].includes(d.event)) this.presence.refresh(d.user_id);
      this.reload(AFFECTS[d.event] ?? []);
    });
  }

  isFriend(userId) {
    return this.friends.has(userId);
  }

  isBlocked(userId) {
    return this.blocked.has(userId);
  }

  pendingWith(userId) {
    return (
      this.incoming.find((r) => r.from_id === userId) ?? this.outgoing.find((r) => r.to_id === userId) ?? null
    );
  }

  sortedFriends() {
    return [...this.friends.values()].sort((a, b) =>
      (a.user.display_name || a.user.username).localeCompare(b.user.display_name || b.user.username),
    );
  }

  // --- loading ----------------------------------------------------------------------------
  reload(lists) {
    for (const l of lists) this.stale.add(l);
    if (this.timer || !this.stale.size) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      const todo = [...this.stale];
      this.stale.clear();
      Promise.all(todo.map((l) => this.load(l)))
        .then(() => {
          this.loaded = true;
          this.dispatchEvent(new CustomEvent("change"));
        })
        .catch(() => {
          for (const l of todo) this.stale.add(l); // retried on the next open or event
        });
    }, 0);
  }

  async pages(op, key, fields = {}) {
    const out = [];
    let cursor = null;
    for (let i = 0; i < MAX_PAGES; i++) {
      const page = await this.socket.request(op, { ...fields, ...cursor, limit: PAGE });
      out.push(...page[key]);
      if (page.next_after) cursor = { after: page.next_after };
      else if (page.next_before) cursor = { before: page.next_before };
      else break;
    }
    return out;
  }

  async load(list) {
    if (list === "friends") {
      const friends = await this.pages("friends", "friends");
      this.friends = new Map(friends.map((f) => [f.user.user_id, f]));
      for (const f of friends) this.store.rememberUser(f.user);
      this.presence.watch(this.friends.keys());
    } else if (list === "incoming" || list === "outgoing") {
      this[list] = await this.pages("friend_requests", "requests", { direction: list });
    } else if (list === "blocks") {
      const users = await this.pages("blocks", "users");
      this.blocked = new Map(users.map((e) => [e.user.user_id, e.user]));
    }
  }

  // --- actions: each resolves after the server's reply; the lists follow by event -----------
  request(userId, message = "") {
    return this.socket.request("friend_request", { to: userId, message });
  }

  accept(requestId) {
    return this.socket.request("friend_accept", { request_id: requestId });
  }

  reject(requestId) {
    return this.socket.request("friend_reject", { request_id: requestId });
  }

  cancel(requestId) {
    return this.socket.request("friend_cancel", { request_id: requestId });
  }

  remove(userId) {
    return this.socket.request("friend_delete", { user_id: userId });
  }

  block(userId) {
    return this.socket.request("block", { user_id: userId });
  }

  unblock(userId) {
    return this.socket.request("unblock", { user_id: userId });
  }
}
