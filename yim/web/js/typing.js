// Typing indicators (docs/protocol.md §6.11): tell the others while this user types (at
// most one `typing` per conversation every 3 s, the server's own limit), and show who else
// is typing for a few seconds after each of their notices.

const SEND_EVERY_MS = 3000;
const SHOW_FOR_MS = 5000;

export class Typing extends EventTarget {
  constructor(socket, store) {
    super();
    this.socket = socket;
    this.lastSent = new Map(); // conv_id -> ms
    this.active = new Map(); // conv_id -> Map(user_id -> timer)

    socket.addEventListener("notice", (e) => {
      const { type, data } = e.detail;
      if (type === "typing" && data.user_id !== store.me.user_id) this.show(data.conv_id, data.user_id);
    });
    // A message from someone ends their typing.
    store.addEventListener("message", (e) => this.hide(e.detail.conv_id, e.detail.sender_id));
  }

  // The user typed in a conversation's composer.
  typed(convId) {
    if (!convId || !this.socket.isOpen) return;
    const now = Date.now();
    if (now - (this.lastSent.get(convId) ?? 0) < SEND_EVERY_MS) return;
    this.lastSent.set(convId, now);
    this.socket.request("typing", { conv_id: convId }).catch(() => {});
  }

  who(convId) {
    return [...(this.active.get(convId)?.keys() ?? [])];
  }

  show(convId, userId) {
    let users = this.active.get(convId);
    if (!users) this.active.set(convId, (users = new Map()));
    clearTimeout(users.get(userId));
    users.set(userId, setTimeout(() => this.hide(convId, userId), SHOW_FOR_MS));
    this.dispatchEvent(new CustomEvent("change", { detail: convId }));
  }

  hide(convId, userId) {
    const users = this.active.get(convId);
    if (!users?.has(userId)) return;
    clearTimeout(users.get(userId));
    users.delete(userId);
    if (!users.size) this.active.delete(convId);
    this.dispatchEvent(new CustomEvent("change", { detail: convId }));
  }
}
