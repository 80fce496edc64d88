// Client state and the sync engine: conversations, loaded history, the outbox, and the
// inbox cursor (the highest inbox seq this page holds without a gap).
//
// Delivery model (docs/protocol.md, "Sync"): the user's inbox is a gap-free sequence of
// events. Pushes are a shortcut; the inbox is the truth. Every event, pushed or synced,
// goes through one ordered pipeline: events at or below the cursor are duplicates and are
// dropped; an event above cursor+1 is buffered and triggers a `sync` from the cursor;
// while a sync (or the first snapshot) runs, pushes are buffered and merged by seq
// afterwards. Applying an event is idempotent (messages are deduplicated by msg_id,
// sequence numbers only move forward), so overlaps between a snapshot, a sync page and a
// push are harmless.
//
// The server does not echo a request's own inbox event to the connection that made it:
// the `send` and `read` replies stand for those events (their inbox_seq is fed into the
// same pipeline, so the cursor stays gap-free).
//
// Unread counts: the server's per-conversation `unread` (system entries, recall entries
// and recalled messages never count) is the base; afterwards each new countable message
// from someone else adds one, and a read marker recounts from loaded history or asks the
// server again. Each (last_seq, read_seq) pair is a version: a list snapshot replaces the
// local numbers only when it is at least as new.
//
// Inbox events of other types (relation, service, ...) are applied in the same order and
// handed to the feature modules as "inbox" events; each newly applied timeline entry is
// announced as a "message" event (typing indicators, group members, read receipts).

import { randomId } from "./ids.js";

const SYNC_PAGE = 500;
const HISTORY_PAGE = 50;
const LIST_PAGE = 50;
const RESNAPSHOT_GAP = 2000; // further behind than this: reload the list instead of syncing

function newConv(convId) {
  return {
    conv_id: convId,
    type: "direct",
    peer: null, // direct conversations
    name: "", // groups
    member_count: 0,
    active: true,
    last_seq: 0,
    read_seq: 0, // confirmed by the server
    unread: 0,
    mentioned: false, // a message after read_seq mentions me (or everyone)
    peer_read_seq: null, // one-to-one read receipts: the peer has read up to here (null: unknown)
    shop_id: null, // service conversations
    customer_id: null,
    updated_at: 0,
    last_message: null,
    msgs: [], // loaded history, ascending by seq, contiguous
    ids: new Set(),
    loaded: false,
    loading: false,
    hasOlder: true,
    loadingOlder: false,
    readBusy: false,
    receiptAsked: 0,
  };
}

export function unreadOf(conv) {
  return conv.unread;
}

export function isEntry(m) {
  return m.kind === "system" || m.kind === "recall" || m.kind === "edit";
}

// The list pages by the last conversation's newest entry id (a decimal string).
function nextListCursor(page) {
  return page.next_before == null ? null : String(page.next_before);
}

function idCompare(a, b) {
  // 64-bit ids as decimal strings: compare without losing precision.
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

export class Store extends EventTarget {
  constructor(api, socket, session) {
    super();
    this.api = api;
    this.socket = socket;
    this.me = {
      user_id: session.user_id,
      username: session.username,
      display_name: session.display_name || session.username,
    };
    this.deviceId = session.device_id;
    this.convs = new Map();
    this.users = new Map();
    this.usersAsked = new Set();
    this.cursor = 0;
    this.ready = false; // the first snapshot is taken
    this.syncing = false;
    this.syncAgain = false;
    this.pending = new Map(); // inbox seq -> event, waiting for the gap below it to fill
    this.outbox = new Map(); // client_msg_id -> a message not yet acknowledged
    this.peerHints = new Map(); // conv_id -> peer user, learned from a send reply
    this.previews = new Map(); // msg_id -> blob: URL of an image this page uploaded
    this.fetching = new Set(); // conv_ids with a `conversation` request queued
    this.offUnread = 0; // unread in conversations beyond the loaded pages of the list
    this.listNext = null;
    this.listLoading = false;
    this.visibleConv = null;
    this.conn = { state: "connecting" };
    this.dirty = { list: false, status: false, synced: false, convs: new Set() };
    this.flushQueued = false;
    this.refreshTimer = 0;

    socket.addEventListener("open", (e) => this.onOpen(e.detail));
    socket.addEventListener("event", (e) => this.onPush(e.detail));
    socket.addEventListener("notice", (e) => this.onNotice(e.detail));
    socket.addEventListener("status", (e) => {
      this.conn = e.detail;
      this.changed("status");
    });
  }

  // --- change notification: batched into one "change" event per microtask --------------
  changed(what, convId) {
    if (what === "conv") {
      this.dirty.convs.add(convId);
      this.dirty.list = true;
    } else {
      this.dirty[what] = true;
    }
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        const detail = this.dirty;
        this.dirty = { list: false, status: false, synced: false, convs: new Set() };
        this.dispatchEvent(new CustomEvent("change", { detail }));
      });
    }
  }

  // --- queries ------------------------------------------------------------------------
  get totalUnread() {
    let total = this.offUnread;
    for (const c of this.convs.values()) total += c.unread;
    return total;
  }

  sortedConvs() {
    return [...this.convs.values()].sort((a, b) => {
      const x = a.last_message?.msg_id ?? "0";
      const y = b.last_message?.msg_id ?? "0";
      return idCompare(y, x) || b.updated_at - a.updated_at;
    });
  }

  convWithPeer(userId) {
    for (const c of this.convs.values()) if (c.type === "direct" && c.peer?.user_id === userId) return c;
    return null;
  }

  // Unsent messages of a conversation, or of a draft with a user or a shop.
  outboxFor(convId, peerId, shopId) {
    return [...this.outbox.values()].filter((m) =>
      convId ? m.conv_id === convId : shopId ? m.shop_id === shopId : m.to === peerId,
    );
  }

  mentionsMe(m) {
    return m.sender_id !== this.me.user_id && (!!m.mention_all || (m.mentions ?? []).includes(this.me.user_id));
  }

  rememberUser(u) {
    if (u?.user_id) this.users.set(u.user_id, u);
  }

  // The user with this id, or null while it is being fetched (a "list" change follows).
  user(userId) {
    const u = this.users.get(userId);
    if (u || this.usersAsked.has(userId)) return u ?? null;
    this.usersAsked.add(userId);
    this.api
      .user(userId)
      .then((found) => {
        this.rememberUser(found);
        this.changed("list");
        for (const c of this.convs.values()) if (c.type === "group") this.changed("conv", c.conv_id);
      })
      .catch(() => {});
    return null;
  }

  // --- connection lifecycle -----------------------------------------------------------
  async onOpen(auth) {
    try {
      if (!this.ready || auth.inbox_seq - this.cursor > RESNAPSHOT_GAP) {
        await this.snapshot(auth.inbox_seq);
      } else {
        await this.catchUp();
        this.refreshListSoon(); // counts of conversations touched while away, read-fan-out groups
      }
    } catch (err) {
      if (err.code !== "disconnected" && err.code !== "timeout") console.warn("yim: sync failed", err);
      return;
    }
    this.flushOutbox();
    if (this.visibleConv) {
      const conv = this.convs.get(this.visibleConv);
      if (conv && !conv.loaded) this.loadLatest(conv).catch(() => {});
      else if (conv) this.loadNewer(conv).catch(() => {});
      this.markRead(this.visibleConv);
    }
    this.changed("synced");
  }

  // First connection of this page (or far behind): take the conversation list as the
  // state at inbox seq `head`, then continue from there with pushes and syncs.
  async snapshot(head) {
    this.syncing = true;
    try {
      const page = await this.socket.request("conversations", { limit: LIST_PAGE });
      if (this.ready) {
        // Far behind after a long sleep: drop loaded history rather than replay the inbox.
        for (const c of this.convs.values()) {
          Object.assign(c, { msgs: [], ids: new Set(), loaded: false, hasOlder: true });
        }
      }
      this.mergeList(page, true);
      this.cursor = Math.max(this.cursor, head);
      this.ready = true;
    } finally {
      this.syncing = false;
    }
    this.drain();
  }

  async catchUp() {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    const start = this.cursor;
    try {
      do {
        this.syncAgain = false;
        for (;;) {
          const page = await this.socket.request("sync", { since: this.cursor, limit: SYNC_PAGE });
          for (const ev of page.events) {
            if (ev.seq <= this.cursor) continue;
            this.apply(ev);
            this.cursor = ev.seq;
          }
          for (const g of page.groups ?? []) this.groupHead(g);
          if (!page.has_more) break;
        }
      } while (this.syncAgain);
    } finally {
      this.syncing = false;
    }
    if (this.cursor === start && this.pending.size) {
      // Nothing new although a push was ahead of us: try again shortly instead of spinning.
      setTimeout(() => this.drain(), 1000);
      return;
    }
    this.drain();
  }

  onPush(ev) {
    if (ev.seq <= this.cursor) return; // already held
    this.pending.set(ev.seq, ev);
    this.drain();
  }

  drain() {
    if (!this.ready || this.syncing) return;
    for (;;) {
      const ev = this.pending.get(this.cursor + 1);
      if (!ev) break;
      this.pending.delete(ev.seq);
      this.apply(ev);
      this.cursor = ev.seq;
    }
    for (const seq of this.pending.keys()) if (seq <= this.cursor) this.pending.delete(seq);
    if (this.pending.size && this.socket.isOpen) this.catchUp().catch(() => {}); // a gap
  }

  onNotice(frame) {
    // A read-fan-out group's message is not in the inbox: it comes as a notice (and by
    // `history` after a gap), deduplicated like everything else.
    if (frame.type === "group_message" && this.ready) this.applyGroupMessage(frame.data);
    else if (frame.type === "reaction" && this.ready) this.applyReaction(frame.data);
  }

  // Notices of a read-fan-out group come one per entry, in order. One past a hole (a notice
  // dropped while the cluster healed, docs/protocol.md §4.3) pulls the missing entries with
  // `history` first, so each is shown, counted and notified in seq order. The pulls of one
  // group run one after the other (conv.groupPull), so a notice that arrives meanwhile waits
  // and finds the hole filled.
  applyGroupMessage(m) {
    const conv = this.convs.get(m.conv_id);
    if (!conv || (!conv.groupPull && m.seq <= conv.last_seq + 1)) {
      this.applyMessage(m);
      return;
    }
    const pull = (conv.groupPull ?? Promise.resolve())
      .then(() => this.fillGroupHole(conv, m.seq))
      .catch(() => {}) // offline: the next sync's `groups` brings the rest
      .then(() => this.applyMessage(m));
    conv.groupPull = pull;
    pull.then(() => {
      if (conv.groupPull === pull) conv.groupPull = null;
    });
  }

  async fillGroupHole(conv, seq) {
    let after = conv.last_seq;
    while (after + 1 < seq && this.socket.isOpen) {
      const page = await this.socket.request("history", { conv_id: conv.conv_id, after, limit: HISTORY_PAGE });
      for (const m of page.messages) if (m.seq < seq) this.applyMessage(m);
      if (!page.has_more || !page.messages.length) break;
      after = page.messages.at(-1).seq; // ascending; entries hidden from me are skipped
    }
  }

  apply(ev) {
    const d = ev.data ?? {};
    switch (ev.type) {
      case "message":
        this.applyMessage(d);
        break;
      case "read": {
        // This user read a conversation (on this or another device).
        const conv = this.convs.get(d.conv_id);
        if (conv) this.applyReadMarker(conv, d.read_seq);
        else this.refreshListSoon();
        break;
      }
      case "reaction":
        this.applyReaction(d);
        break;
      case "hidden":
        // This user hid entries from their devices, on this or another device (§6.9b).
        this.applyHidden(d);
        break;
      case "receipt": {
        // The peer of a one-to-one conversation read up to `read_seq`.
        const conv = this.convs.get(d.conv_id);
        if (conv && d.user_id !== this.me.user_id) this.peerRead(conv, d.read_seq);
        break;
      }
      default:
        // relation, service, and types this client does not know: the feature modules
        // listen (the cursor moves on either way).
        this.dispatchEvent(new CustomEvent("inbox", { detail: ev }));
        break;
    }
  }

  countable(m) {
    return !isEntry(m) && !m.recalled && m.sender_id !== this.me.user_id;
  }

  applyMessage(m) {
    let conv = this.convs.get(m.conv_id);
    if (!conv) {
      conv = newConv(m.conv_id);
      const mine = m.sender_id === this.me.user_id;
      conv.peer = this.peerHints.get(m.conv_id) ?? (mine ? null : this.user(m.sender_id));
      if (m.seq === 1) {
        conv.loaded = true; // a brand-new conversation: this message is all of its history
        conv.hasOlder = false;
      }
      this.convs.set(m.conv_id, conv);
      this.fetchConv(m.conv_id); // learn its type, peer and read state
    }
    const isNew = m.seq > conv.last_seq;
    if (isNew) conv.last_seq = m.seq;
    if (!isEntry(m) && (!conv.last_message || m.seq >= conv.last_message.seq)) conv.last_message = m;
    if (m.created_at > conv.updated_at) conv.updated_at = m.created_at;
    if (m.sender_id === this.me.user_id) {
      // Sending reads the conversation up to one's own message (the server does the same).
      if (m.seq > conv.read_seq) {
        conv.read_seq = m.seq;
        conv.unread = 0;
      }
      this.outbox.delete(m.client_msg_id);
    } else if (isNew && m.seq > conv.read_seq && this.countable(m)) {
      conv.unread += 1;
      if (this.mentionsMe(m)) conv.mentioned = true;
    }
    if (m.kind === "recall" && isNew) this.applyRecall(conv, m);
    else if (m.kind === "edit" && isNew) this.applyEdit(conv, m);
    else if (m.kind === "system" && isNew && (conv.type !== "direct" || isPin(m))) this.fetchConv(conv.conv_id); // members, name, pins
    if (conv.loaded || conv.loading) this.insertMsg(conv, m);
    this.changed("conv", conv.conv_id);
    if (isNew) this.dispatchEvent(new CustomEvent("message", { detail: m }));
    if (this.visibleConv === conv.conv_id) this.markRead(conv.conv_id);
  }

  applyRecall(conv, entry) {
    const seq = entry.body?.seq;
    const i = conv.msgs.findIndex((x) => x.seq === seq);
    if (i >= 0) {
      const target = conv.msgs[i];
      if (!target.recalled && this.countable(target) && seq > conv.read_seq && conv.unread > 0) conv.unread -= 1;
      conv.msgs[i] = { ...target, recalled: true, body: {} };
    } else if (seq > conv.read_seq) {
      this.refreshListSoon(); // cannot tell whether it counted: ask
    }
    if (conv.last_message?.seq === seq) conv.last_message = { ...conv.last_message, recalled: true, body: {} };
  }

  // An `edit` entry (docs/protocol.md §11.2a): the named message takes the new body. One not
  // held here comes edited from `history` when it is loaded.
  applyEdit(conv, entry) {
    const seq = entry.body?.seq;
    const body = entry.body?.body;
    if (seq == null || !body) return;
    const i = conv.msgs.findIndex((x) => x.seq === seq);
    if (i >= 0 && !conv.msgs[i].recalled) conv.msgs[i] = { ...conv.msgs[i], body };
    if (conv.last_message?.seq === seq && !conv.last_message.recalled) conv.last_message = { ...conv.last_message, body };
  }

  // Delete for me: the entries leave this device's copy; the counts and the list's last
  // message come from the server, which no longer counts or shows them.
  applyHidden(d) {
    const conv = this.convs.get(d.conv_id);
    if (!conv) return;
    const gone = new Set(d.seqs ?? []);
    for (let i = conv.msgs.length - 1; i >= 0; i--) {
      if (gone.has(conv.msgs[i].seq)) {
        conv.ids.delete(conv.msgs[i].msg_id);
        conv.msgs.splice(i, 1);
      }
    }
    if (conv.last_message && gone.has(conv.last_message.seq)) conv.last_message = null;
    this.changed("conv", conv.conv_id);
    this.refreshListSoon();
  }

  applyReadMarker(conv, readSeq) {
    if (readSeq > conv.read_seq) {
      conv.read_seq = readSeq;
      if (readSeq >= conv.last_seq) {
        conv.unread = 0;
        conv.mentioned = false;
      } else {
        const n = this.countAfter(conv, readSeq);
        if (n === null) this.refreshListSoon();
        else conv.unread = n;
      }
    }
    this.changed("conv", conv.conv_id);
  }

  // Countable messages after `seq`, if the loaded history covers them; else null.
  countAfter(conv, seq) {
    const msgs = conv.msgs;
    if (!conv.loaded || !msgs.length || msgs[0].seq > seq + 1 || msgs.at(-1).seq < conv.last_seq) return null;
    return msgs.filter((m) => m.seq > seq && this.countable(m)).length;
  }

  peerRead(conv, readSeq) {
    if (conv.peer_read_seq === null || readSeq > conv.peer_read_seq) {
      conv.peer_read_seq = readSeq;
      this.changed("conv", conv.conv_id);
    }
  }

  insertMsg(conv, m) {
    const list = conv.msgs;
    if (conv.ids.has(m.msg_id)) {
      const i = list.findIndex((x) => x.msg_id === m.msg_id);
      if (i >= 0 && !(list[i].recalled && !m.recalled)) list[i] = m;
      return;
    }
    conv.ids.add(m.msg_id);
    let i = list.length;
    while (i > 0 && list[i - 1].seq > m.seq) i--;
    list.splice(i, 0, m);
  }

  groupHead(g) {
    // A read-fan-out group moved on while we were away: its messages are pulled, not synced.
    const conv = this.convs.get(g.conv_id);
    if (!conv || g.last_seq > conv.last_seq) this.refreshListSoon();
    if (conv?.loaded) this.loadNewer(conv).catch(() => {});
    // Reactions in a read-fan-out group are in no inbox: pull what changed (§12.7).
    if (conv?.loaded && g.reaction_ver > conv.reaction_ver) this.pullReactions(conv).catch(() => {});
  }

  // --- the conversation list ----------------------------------------------------------
  // Merge a page of the list. `total_unread` covers every conversation, also those on
  // pages not loaded yet: that remainder is kept apart so the total stays right.
  mergeList(page, first = false) {
    let pageUnread = 0;
    const inPage = new Set();
    for (const c of page.conversations) {
      this.mergeConv(c);
      pageUnread += c.unread;
      inPage.add(c.conv_id);
    }
    let otherUnread = 0;
    for (const c of this.convs.values()) if (!inPage.has(c.conv_id)) otherUnread += c.unread;
    this.offUnread = Math.max(0, page.total_unread - pageUnread - otherUnread);
    if (first) this.listNext = nextListCursor(page);
    this.changed("list");
  }

  mergeConv(c) {
    let conv = this.convs.get(c.conv_id);
    if (!conv) {
      conv = newConv(c.conv_id);
      this.convs.set(c.conv_id, conv);
    }
    conv.type = c.type;
    conv.name = c.name ?? "";
    conv.member_count = c.member_count ?? 0;
    conv.active = c.active ?? true;
    if (c.shop_id) conv.shop_id = c.shop_id; // service conversations: the shop and its customer
    if (c.customer_id) conv.customer_id = c.customer_id;
    if (c.peer) {
      conv.peer = c.peer;
      this.rememberUser(c.peer);
    }
    // Take the server's numbers when they are at least as new as ours.
    if (c.last_seq > conv.last_seq || (c.last_seq === conv.last_seq && c.read_seq >= conv.read_seq)) {
      conv.unread = c.read_seq >= conv.read_seq || conv.read_seq < c.last_seq ? c.unread : 0;
      conv.mentioned = !!c.mentioned && conv.unread > 0;
      conv.last_seq = c.last_seq;
      if (c.read_seq > conv.read_seq) conv.read_seq = c.read_seq;
    }
    if (c.peer_read_seq) this.peerRead(conv, c.peer_read_seq);
    if (c.last_message && (!conv.last_message || c.last_message.seq >= conv.last_message.seq)) {
      conv.last_message = c.last_message;
    }
    if (c.updated_at > conv.updated_at) conv.updated_at = c.updated_at;
    if (c.pinned) conv.pinned = c.pinned;
    if (conv.reaction_ver === undefined) conv.reaction_ver = c.reaction_ver ?? 0;
    if (conv.last_seq === 0) conv.hasOlder = false;
    this.changed("conv", conv.conv_id);
  }

  // One conversation as the list shows it (`conversation` op): a new one, or one whose
  // type or membership changed.
  fetchConv(convId) {
    if (!this.socket.isOpen) return this.refreshListSoon();
    if (this.fetching.has(convId)) return;
    this.fetching.add(convId);
    setTimeout(() => {
      this.fetching.delete(convId);
      this.socket
        .request("conversation", { conv_id: convId })
        .then((c) => this.mergeConv(c))
        .catch(() => {});
    }, 0);
  }

  refreshListSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      if (!this.socket.isOpen) return;
      this.socket
        .request("conversations", { limit: LIST_PAGE })
        .then((page) => this.mergeList(page))
        .catch(() => {});
    }, 0);
  }

  async loadMoreConversations() {
    if (this.listNext == null || this.listLoading) return;
    this.listLoading = true;
    try {
      const page = await this.api.conversations(this.listNext, LIST_PAGE);
      this.mergeList(page);
      this.listNext = nextListCursor(page);
    } finally {
      this.listLoading = false;
    }
  }

  // --- history --------------------------------------------------------------------------
  async loadLatest(conv) {
    if (conv.loaded || conv.loading) return;
    conv.loading = true;
    try {
      const page = await this.socket.request("history", { conv_id: conv.conv_id, limit: HISTORY_PAGE });
      const first = page.messages[0]?.seq ?? Infinity;
      // Keep only what joins the page contiguously (pushes that arrived meanwhile).
      conv.msgs = conv.msgs.filter((m) => m.seq > first);
      conv.ids = new Set(conv.msgs.map((m) => m.msg_id));
      for (const m of page.messages) this.insertMsg(conv, m);
      const newest = page.messages.at(-1);
      if (newest && newest.seq > conv.last_seq) conv.last_seq = newest.seq;
      conv.hasOlder = page.has_more;
      conv.loaded = true;
    } finally {
      conv.loading = false;
      this.changed("conv", conv.conv_id);
    }
    this.askReceipt(conv);
  }

  async loadOlder(conv) {
    if (!conv.loaded) return this.loadLatest(conv);
    if (!conv.hasOlder || conv.loadingOlder || !conv.msgs.length) return;
    conv.loadingOlder = true;
    try {
      const before = conv.msgs[0].seq;
      const page = await this.socket.request("history", { conv_id: conv.conv_id, before, limit: HISTORY_PAGE });
      for (const m of page.messages) this.insertMsg(conv, m);
      conv.hasOlder = page.has_more;
    } finally {
      conv.loadingOlder = false;
      this.changed("conv", conv.conv_id);
    }
  }

  // Entries after the loaded tail (a read-fan-out group, or after a reconnect).
  async loadNewer(conv) {
    if (!conv.loaded || !conv.msgs.length) return;
    for (;;) {
      const after = conv.msgs.at(-1).seq;
      const page = await this.socket.request("history", { conv_id: conv.conv_id, after, limit: HISTORY_PAGE });
      for (const m of page.messages) this.applyMessage(m);
      if (!page.has_more || !page.messages.length) break;
    }
  }

  // The peer's read position may be older than what is loaded: ask once whether my latest
  // message was read.
  askReceipt(conv) {
    if (conv.type !== "direct" || !this.socket.isOpen) return;
    const mine = conv.msgs.findLast((m) => m.sender_id === this.me.user_id && !isEntry(m));
    if (!mine || mine.seq <= (conv.peer_read_seq ?? 0) || mine.seq <= conv.receiptAsked) return;
    conv.receiptAsked = mine.seq;
    this.socket
      .request("receipts", { conv_id: conv.conv_id, seq: mine.seq })
      .then((r) => {
        if (r.read_count > 0 && r.read_count >= r.total) this.peerRead(conv, mine.seq);
      })
      .catch(() => {});
  }

  // --- reading ----------------------------------------------------------------------------
  setVisible(convId) {
    this.visibleConv = convId;
    if (convId) this.markRead(convId);
  }

  markRead(convId) {
    const conv = this.convs.get(convId);
    if (!conv || !this.ready) return;
    const target = conv.last_seq;
    if (target <= conv.read_seq) return;
    if (conv.unread || conv.mentioned) {
      conv.unread = 0; // everything up to `target` is being read: the badge clears at once
      conv.mentioned = false;
      this.changed("conv", convId);
    }
    if (conv.readBusy || !this.socket.isOpen) return;
    conv.readBusy = true;
    this.socket
      .request("read", { conv_id: convId, seq: target })
      .then(
        (res) => {
          const data = { conv_id: convId, read_seq: res.read_seq };
          if (res.inbox_seq) this.onPush({ seq: res.inbox_seq, type: "read", data });
          else this.applyReadMarker(conv, res.read_seq);
        },
        () => this.refreshListSoon(), // the optimistic zero may be wrong: ask
      )
      .finally(() => {
        conv.readBusy = false;
        if (this.visibleConv === convId && conv.last_seq > conv.read_seq && this.socket.isOpen) this.markRead(convId);
      });
  }

  // --- sending ----------------------------------------------------------------------------
  // target: {conv_id} for an existing conversation, {to: user} to start one, or
  // {shop_id} to write to a shop (customer service). extra: {mentions, mention_all}.
  send(target, kind, body, extra = {}) {
    const item = {
      client_msg_id: randomId(),
      conv_id: target.conv_id ?? null,
      to: target.to?.user_id ?? null,
      toUser: target.to ?? null,
      shop_id: target.shop_id ?? null,
      kind,
      body,
      mentions: extra.mentions?.length ? extra.mentions : null,
      mention_all: !!extra.mention_all,
      upload: extra.upload ?? null, // media: {file, name, size, mime, preview} until uploaded
      reply_to: extra.reply_to ?? null, // a reply: the quoted seq, and its quote as shown meanwhile
      quote: extra.quote ?? null,
      sender_id: this.me.user_id,
      created_at: Date.now(),
      state: "sending",
      inflight: false,
      error: null,
    };
    this.outbox.set(item.client_msg_id, item);
    this.changed(item.conv_id ? "conv" : "list", item.conv_id);
    // At once, inside the user's click or key press: what may ask the browser for a permission.
    this.dispatchEvent(new CustomEvent("sending", { detail: item }));
    this.transmit(item);
    return item;
  }

  // An image or a file: upload the bytes first, then send a message naming the upload.
  sendMedia(target, file, kind) {
    const upload = {
      file,
      name: file.name || kind,
      size: file.size,
      mime: file.type,
      preview: kind === "image" ? URL.createObjectURL(file) : null,
      media: null,
    };
    return this.send(target, kind, { media_id: null }, { upload });
  }

  async uploadFor(item) {
    const up = item.upload;
    if (item.inflight) return;
    item.inflight = true;
    try {
      up.media = await this.api.upload(up.file, item.kind, up.name);
    } catch (err) {
      item.state = "failed";
      item.error = err.message;
      item.code = err.code;
      this.changed("conv", item.conv_id);
      return;
    } finally {
      item.inflight = false;
    }
    item.body = { media_id: up.media.media_id };
    this.transmit(item);
  }

  retry(clientMsgId) {
    const item = this.outbox.get(clientMsgId);
    if (!item || item.state !== "failed") return;
    item.state = "sending";
    item.error = null;
    this.changed("conv", item.conv_id);
    this.transmit(item);
  }

  discard(clientMsgId) {
    const item = this.outbox.get(clientMsgId);
    if (!item) return;
    this.outbox.delete(clientMsgId);
    this.changed("conv", item.conv_id);
  }

  flushOutbox() {
    for (const item of this.outbox.values()) if (item.state === "sending" && !item.inflight) this.transmit(item);
  }

  transmit(item) {
    if (item.upload && !item.upload.media) return void this.uploadFor(item);
    if (!this.socket.isOpen || !this.ready) return; // sent by flushOutbox after the next sync
    item.inflight = true;
    const fields = { kind: item.kind, body: item.body, client_msg_id: item.client_msg_id };
    if (item.conv_id) fields.conv_id = item.conv_id;
    else if (item.shop_id) fields.shop_id = item.shop_id;
    else fields.to = item.to;
    if (item.mentions) fields.mentions = item.mentions;
    if (item.mention_all) fields.mention_all = true;
    if (item.reply_to) fields.reply_to = item.reply_to;
    this.socket
      .request("send", fields)
      .then(
        (ack) => this.onSent(item, ack),
        (err) => {
          if (err.code === "disconnected" || err.code === "timeout") return; // resent after reconnecting
          item.state = "failed";
          item.error = err.message;
          item.code = err.code;
          this.changed("conv", item.conv_id);
        },
      )
      .finally(() => {
        item.inflight = false;
      });
  }

  onSent(item, ack) {
    if (item.toUser) this.peerHints.set(ack.conv_id, item.toUser);
    if (item.shop_id && !this.convs.has(ack.conv_id)) {
      // The first message to a shop opened the service conversation (named after the shop).
      const conv = newConv(ack.conv_id);
      conv.type = "service";
      conv.shop_id = item.shop_id;
      if (ack.seq === 1) Object.assign(conv, { loaded: true, hasOlder: false });
      this.convs.set(ack.conv_id, conv);
      this.fetchConv(ack.conv_id);
    }
    const media = item.upload?.media;
    const msg = {
      msg_id: ack.msg_id,
      conv_id: ack.conv_id,
      seq: ack.seq,
      sender_id: this.me.user_id,
      sender_device: this.deviceId,
      kind: item.kind,
      // A media message's canonical body is the upload's description (docs/protocol.md §16.3).
      body: media ? mediaBody(media) : item.body,
      client_msg_id: item.client_msg_id,
      created_at: ack.created_at,
    };
    if (item.mentions) msg.mentions = item.mentions;
    if (item.mention_all) msg.mention_all = true;
    if (item.quote) msg.body = { ...msg.body, quote: item.quote };
    if (item.upload?.preview) this.previews.set(ack.msg_id, item.upload.preview);
    this.outbox.delete(item.client_msg_id);
    this.applyMessage(msg); // show it now; idempotent when the pipeline applies it again
    this.onPush({ seq: ack.inbox_seq, type: "message", data: msg });
    this.dispatchEvent(new CustomEvent("sent", { detail: { item, msg } }));
  }

  // --- recall and group changes -----------------------------------------------------------
  // The reply stands for the entry the request appended (docs/protocol.md §12.2), but does
  // not carry it: pull it with `sync` (or `history` in a read-fan-out group).
  pullAfterChange(convId, inboxSeq) {
    if (inboxSeq > this.cursor) this.catchUp().catch(() => {});
    const conv = this.convs.get(convId);
    if (!inboxSeq && conv?.loaded) this.loadNewer(conv).catch(() => {});
  }

  async recall(convId, seq) {
    const res = await this.socket.request("recall", { conv_id: convId, seq });
    const conv = this.convs.get(convId);
    if (conv) {
      this.applyRecall(conv, { body: { seq } });
      this.changed("conv", convId);
    }
    this.pullAfterChange(convId, res.inbox_seq);
    return res;
  }

  // Delete for me (docs/protocol.md §6.9b): gone from this user's devices only.
  async hide(convId, seqs) {
    const res = await this.socket.request("hide", { conv_id: convId, seqs });
    this.applyHidden({ conv_id: convId, seqs });
    const conv = this.convs.get(convId);
    if (conv) conv.unread = res.unread;
    if (res.inbox_seq > this.cursor) this.catchUp().catch(() => {});
    return res;
  }

  // Replace the text of one's own text message (docs/protocol.md §6.9a).
  async edit(convId, seq, text) {
    const res = await this.socket.request("edit", { conv_id: convId, seq, text });
    const conv = this.convs.get(convId);
    if (conv) {
      const held = conv.msgs.find((x) => x.seq === seq);
      const body = { ...(held?.body ?? {}), text, edited_at: res.edited_at };
      this.applyEdit(conv, { body: { seq, body } });
      this.changed("conv", convId);
    }
    this.pullAfterChange(convId, res.inbox_seq);
    return res;
  }

  // Copy messages of a conversation into others (docs/protocol.md §6.14). The copies are
  // not pushed to this connection: pull them like the entry of any other change.
  async forward(convId, seqs, targetConvIds) {
    const stamp = randomId();
    const targets = targetConvIds.map((id, i) => ({ conv_id: id, client_msg_id: `${stamp}-${i}` }));
    const out = await this.socket.request("forward", { conv_id: convId, seqs, targets });
    for (const r of out.results) for (const ack of r.sent) this.pullAfterChange(ack.conv_id, ack.inbox_seq);
    return out;
  }

  // A group this user just created or joined: list it at once.
  addGroup(change) {
    const g = change.group;
    if (!this.convs.has(g.conv_id)) {
      this.mergeConv({
        conv_id: g.conv_id,
        type: "group",
        peer: null,
        name: g.name,
        member_count: g.member_count,
        active: true,
        last_seq: g.last_seq,
        read_seq: g.last_seq,
        unread: 0,
        mentioned: false,
        updated_at: g.created_at,
        last_message: null,
      });
    }
    this.pullAfterChange(g.conv_id, change.inbox_seq);
  }
}

// --- reactions and pins (docs/protocol.md §6.13–6.16, §12.7) -------------------------------
// Added to the Store: a reaction is no timeline entry, so it only replaces the reactions of
// a loaded message; messages not loaded get theirs with `history`.
Object.assign(Store.prototype, {
  setReactions(conv, seq, reactions) {
    const i = conv.msgs.findIndex((x) => x.seq === seq);
    if (i < 0) return;
    conv.msgs[i] = { ...conv.msgs[i], reactions };
    this.changed("conv", conv.conv_id);
  },

  // The conversation's reaction version moves one change at a time; a jump means changes
  // this client missed (a notice of a read-fan-out group): pull them.
  advanceReactions(conv, ver) {
    const held = conv.reaction_ver ?? 0;
    if (ver === held + 1) conv.reaction_ver = ver;
    else if (ver > held && conv.loaded) this.pullReactions(conv).catch(() => {});
  },

  // A `reaction` event or notice: absolute counts; "me" changes only by this user's own.
  applyReaction(d) {
    const conv = this.convs.get(d.conv_id);
    if (!conv) return;
    this.advanceReactions(conv, d.ver);
    const old = conv.msgs.find((x) => x.seq === d.seq);
    if (!old) return;
    const mine = new Set((old.reactions ?? []).filter((r) => r.me).map((r) => r.emoji));
    if (d.user_id === this.me.user_id) {
      if (d.op === "add") mine.add(d.emoji);
      else mine.delete(d.emoji);
    }
    this.setReactions(
      conv,
      d.seq,
      d.counts.map((c) => ({ emoji: c.emoji, count: c.count, me: mine.has(c.emoji) })),
    );
  },

  async react(convId, seq, emoji, remove) {
    const res = await this.socket.request("react", { conv_id: convId, seq, emoji, remove });
    const conv = this.convs.get(convId);
    if (conv) {
      this.setReactions(conv, seq, res.reactions);
      if (res.changed) this.advanceReactions(conv, res.ver);
    }
    // The reply stands for this connection's own `reaction` event (§12.2): it moves the cursor.
    if (res.inbox_seq) {
      const counts = res.reactions.map((r) => ({ emoji: r.emoji, count: r.count }));
      const op = remove ? "remove" : "add";
      const data = { conv_id: convId, seq, msg_id: res.msg_id, user_id: this.me.user_id, emoji, op, counts, ver: res.ver };
      this.onPush({ seq: res.inbox_seq, type: "reaction", data });
    }
    return res;
  },

  async pullReactions(conv) {
    for (;;) {
      const after = conv.reaction_ver ?? 0;
      const page = await this.socket.request("reactions", { conv_id: conv.conv_id, after_ver: after });
      for (const m of page.messages) this.setReactions(conv, m.seq, m.reactions);
      conv.reaction_ver = Math.max(conv.reaction_ver ?? 0, page.ver);
      if (!page.has_more) break;
    }
  },

  async pin(convId, seq, unpin) {
    const res = await this.socket.request(unpin ? "unpin" : "pin", { conv_id: convId, seq });
    this.pullAfterChange(convId, res.inbox_seq);
    this.fetchConv(convId);
    return res;
  },
});

function isPin(m) {
  return m.body?.event === "pinned" || m.body?.event === "unpinned";
}

function mediaBody(m) {
  return {
    media_id: m.media_id,
    mime: m.mime,
    size: m.size,
    name: m.name,
    sha256: m.sha256,
    width: m.width,
    height: m.height,
    thumbnail: m.thumbnail,
  };
}
