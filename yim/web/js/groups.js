// Groups (docs/protocol.md §7): create, members and roles, invite, leave. Members are
// loaded when a group is opened and reloaded after each system entry of the group (every
// membership or role change appends one).
import { t } from "./i18n.js";

const MEMBERS_PAGE = 1000;
const MAX_PAGES = 20;

export class Groups extends EventTarget {
  constructor(socket, store, api) {
    super();
    this.socket = socket;
    this.store = store;
    this.api = api;
    this.groups = new Map(); // conv_id -> {group, members: Map(user_id -> member), loading}

    const onEntry = (m) => {
      if (m.kind === "system" && this.groups.has(m.conv_id)) this.load(m.conv_id, true).catch(() => {});
    };
    store.addEventListener("message", (e) => onEntry(e.detail));
    socket.addEventListener("open", () => {
      for (const id of this.groups.keys()) this.load(id, true).catch(() => {});
    });
  }

  get(convId) {
    return this.groups.get(convId) ?? null;
  }

  role(convId, userId) {
    return this.groups.get(convId)?.members.get(userId)?.role ?? null;
  }

  isAdmin(convId) {
    const role = this.role(convId, this.store.me.user_id);
    return role === "owner" || role === "admin";
  }

  members(convId) {
    return [...(this.groups.get(convId)?.members.values() ?? [])];
  }

  async load(convId, force = false) {
    const known = this.groups.get(convId);
    if (known && (known.loading || !force)) return known;
    const entry = known ?? { group: null, members: new Map(), loading: false };
    entry.loading = true;
    this.groups.set(convId, entry);
    try {
      entry.group = await this.socket.request("group_info", { conv_id: convId });
      const members = new Map();
      const conv = this.store.convs.get(convId);
      if (!conv || conv.active) {
        let after = null;
        for (let i = 0; i < MAX_PAGES; i++) {
          const page = await this.socket.request("group_members", { conv_id: convId, after, limit: MEMBERS_PAGE });
          for (const m of page.members) members.set(m.user_id, m);
          if (!page.next_after) break;
          after = page.next_after;
        }
      }
      entry.members = members;
    } catch (err) {
      if (err.code !== "not_member") throw err;
      entry.members = new Map(); // left or removed: no member list
    } finally {
      entry.loading = false;
    }
    this.dispatchEvent(new CustomEvent("change", { detail: convId }));
    return entry;
  }

  // Usernames ("bob, carol" or one per line) -> users; rejects naming the first unknown one.
  async resolve(text) {
    const names = [...new Set(text.split(/[\s,，、;@]+/).filter(Boolean))];
    const users = await Promise.all(
      names.map((n) =>
        this.api.userByName(n).catch((err) => {
          throw err.code === "not_found" ? new Error(t("No user named “{name}”.", { name: n })) : err;
        }),
      ),
    );
    for (const u of users) this.store.rememberUser(u);
    return users.filter((u) => u.user_id !== this.store.me.user_id);
  }

  async create(name, usernames) {
    const users = await this.resolve(usernames);
    const change = await this.socket.request("group_create", { name, members: users.map((u) => u.user_id) });
    this.store.addGroup(change);
    return change.group;
  }

  async invite(convId, usernames) {
    const users = await this.resolve(usernames);
    if (!users.length) throw new Error(t("Name at least one person to add."));
    const userIds = users.map((u) => u.user_id);
    const change = await this.socket.request("group_invite", { conv_id: convId, user_ids: userIds });
    this.afterChange(convId, change);
  }

  async leave(convId) {
    const change = await this.socket.request("group_leave", { conv_id: convId });
    this.afterChange(convId, change);
  }

  afterChange(convId, change) {
    this.store.pullAfterChange(convId, change.inbox_seq);
    this.store.fetchConv(convId);
    this.load(convId, true).catch(() => {});
  }
}
