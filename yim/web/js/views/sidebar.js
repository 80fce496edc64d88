// The left column: who I am, total unread, connection state, and four tabs: the
// conversation list (start a chat, a group or a shop chat), friends, search and, for shop
// agents, the agent view.
import { clear, h } from "../dom.js";
import { avatar, convTitle, displayName, messageText, presenceDot, shortWhen, systemText } from "../format.js";
import { t, tn } from "../i18n.js";
import { unreadOf } from "../store.js";
import { AgentView } from "./agent.js";
import { field, openDialog } from "./dialog.js";
import { FriendsView } from "./friends.js";
import { icon } from "./icons.js";
import { openMenu } from "./menu.js";
import { muteLabel } from "../pushprefs.js";
import { SearchView } from "./search.js";
import { errorText } from "../errors.js";

function badgeText(n) {
  return n > 99 ? "99+" : String(n);
}

const TABS = [
  ["chats", t("Chats")],
  ["friends", t("Friends")],
  ["search", t("Search")],
  ["agent", t("Agent")],
];

export class Sidebar {
  constructor(options) {
    const { store, api, presence, relations, groups, service } = options;
    const { onLogout, onOpenUser, onOpenShop, onUserMenu, onSearchHit } = options;
    this.store = store;
    this.api = api;
    this.presence = presence;
    this.relations = relations;
    this.groups = groups;
    this.service = service;
    this.pushPrefs = options.pushPrefs ?? null; // muted conversations show a struck bell
    this.onOpenUser = onOpenUser;
    this.onOpenShop = onOpenShop;
    this.activeConv = null;
    this.countdown = 0;
    this.tab = "chats";
    this.isAdmin = null; // a server admin? null until the server answered
    this.activePage = null; // "settings" | "admin" while that page is shown

    this.meName = h("span", { class: "me-name" });
    this.meAvatar = h("span", { class: "me-avatar" });
    this.total = h("span", { class: "badge total-unread", title: t("Unread messages"), hidden: true });
    this.bannerText = h("span", { class: "conn-text" });
    this.bannerBtn = h("button", { type: "button", class: "link conn-action", hidden: true });
    this.banner = h("div", { class: "conn-banner", role: "status", hidden: true }, this.bannerText, this.bannerBtn);

    // tabs
    this.tabBtns = new Map();
    this.requestBadge = h("span", { class: "badge tab-badge", hidden: true });
    for (const [id, label] of TABS) {
      this.tabBtns.set(
        id,
        h(
          "button",
          {
            type: "button",
            role: "tab",
            class: "tab",
            id: "tab-" + id,
            "aria-controls": "panel-" + id,
            onclick: () => this.showTab(id),
          },
          label,
          id === "friends" ? this.requestBadge : null,
        ),
      );
    }
    this.tabBar = h("nav", { class: "tabs", role: "tablist", "aria-label": t("Sections") }, [...this.tabBtns.values()]);

    // chats
    this.newInput = h("input", {
      type: "search",
      name: "peer",
      placeholder: t("Username"),
      "aria-label": t("Username to chat with"),
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      maxlength: 32,
    });
    this.newError = h("p", { class: "form-error", role: "alert" });
    this.list = h("ul", { class: "conv-list", "aria-label": t("Conversations") });
    this.empty = h("p", { class: "list-empty" }, t("No conversations yet. Start one with a username above."));
    this.more = h("p", { class: "list-more", hidden: true }, t("Loading…"));
    this.scroller = h("nav", { class: "conv-scroll" }, this.list, this.empty, this.more);
    this.scroller.addEventListener("scroll", () => this.maybeLoadMore(), { passive: true });
    // The lists of the chats, friends and agent tabs are rebuilt on every render (a message,
    // a presence change): a rebuild between the press and the release of a click detaches
    // the item pressed, and the browser then clicks nothing. So while a press on a list lasts,
    // renders leave the tab's list as it is; the one put off runs once the press ended, after
    // the click it made. (A press on a form control is no click on an item: a select's popup
    // may take the release.)
    this.pressing = null; // the AbortController of the press's release listeners
    this.listStale = false;
    this.onPress = (e) => {
      if (e.target.closest?.("select, input, textarea")) return;
      this.pressing?.abort();
      const pressing = new AbortController();
      const released = () => {
        pressing.abort();
        if (this.pressing !== pressing) return;
        this.pressing = null;
        if (this.listStale) setTimeout(() => this.render(), 0);
      };
      for (const type of ["pointerup", "pointercancel", "blur"]) {
        window.addEventListener(type, released, { signal: pressing.signal });
      }
      this.pressing = pressing;
    };
    this.list.addEventListener("pointerdown", this.onPress);
    const newBtn = h(
      "button",
      {
        type: "button",
        class: "ghost new-btn",
        title: t("New group or shop chat"),
        "aria-label": t("New group or shop chat"),
        "aria-haspopup": "menu",
        onclick: (e) =>
          openMenu(
            e.currentTarget,
            [
              { label: t("New group"), onSelect: () => this.newGroup() },
              { label: t("Chat with a shop"), onSelect: () => this.contactShop() },
            ],
            t("New"),
          ),
      },
      "+",
    );
    const chats = h(
      "div",
      { class: "chats-panel" },
      h(
        "form",
        { class: "new-chat", onsubmit: (e) => this.startChat(e) },
        this.newInput,
        h("button", { type: "submit", class: "primary small" }, t("Chat")),
        newBtn,
      ),
      this.newError,
      this.scroller,
    );

    this.friends = new FriendsView({ store, api, relations, presence, onOpenUser, onUserMenu });
    this.search = new SearchView({ store, onOpen: onSearchHit });
    this.agent = new AgentView({ store, service, onOpenConv: (id) => (location.hash = `#/c/${id}`) });
    this.panels = new Map([
      ["chats", chats],
      ["friends", this.friends.el],
      ["search", this.search.el],
      ["agent", this.agent.el],
    ]);
    for (const el of [this.friends.el, this.agent.el]) el.addEventListener("pointerdown", this.onPress);
    for (const [id, el] of this.panels) {
      el.id = "panel-" + id;
      el.setAttribute("role", "tabpanel");
      el.setAttribute("aria-labelledby", "tab-" + id);
      el.classList.add("panel");
    }

    this.el = h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        { class: "me-bar" },
        this.meAvatar,
        h("div", { class: "me-text" }, this.meName, h("span", { class: "me-handle" }, "@" + store.me.username)),
        this.total,
        h("button", { type: "button", class: "ghost logout", onclick: onLogout, title: t("Log out") }, t("Log out")),
      ),
      this.pageNav(),
      this.banner,
      this.tabBar,
      [...this.panels.values()],
    );
    this.renderMe();
    this.showTab("chats");
  }

  // Links to the pages shown in place of the chat: Settings for everyone, Admin for server
  // admins (hidden until the server said so).
  pageNav() {
    this.settingsLink = h("a", { class: "page-link", href: "#/settings" }, t("Settings"));
    this.adminLink = h("a", { class: "page-link", href: "#/admin", hidden: true }, t("Admin"));
    this.pageNavEl = h("nav", { class: "page-nav", "aria-label": t("Pages") }, this.settingsLink, this.adminLink);
    return this.pageNavEl;
  }

  // `data-admin` says once the server answered (yes / no), for people and tests alike.
  setAdmin(on) {
    this.isAdmin = on;
    this.adminLink.hidden = !on;
    this.pageNavEl.dataset.admin = on ? "yes" : "no";
  }

  showTab(id) {
    if (id === "agent" && this.tab !== "agent") this.service.watch(true);
    else if (id !== "agent" && this.tab === "agent") this.service.watch(false);
    this.tab = id;
    for (const [tid, btn] of this.tabBtns) {
      btn.setAttribute("aria-selected", tid === id ? "true" : "false");
      btn.tabIndex = tid === id ? 0 : -1;
    }
    for (const [pid, el] of this.panels) el.hidden = pid !== id;
    if (id === "search") this.search.focus();
    this.render();
  }

  renderMe() {
    this.meName.textContent = displayName(this.store.me);
    this.meAvatar.replaceChildren(avatar(this.store.me, "sm"));
  }

  async startChat(e) {
    e.preventDefault();
    const name = this.newInput.value.trim();
    this.newError.textContent = "";
    if (!name) return;
    if (name.toLowerCase() === this.store.me.username.toLowerCase()) {
      this.newError.textContent = t("That's you. Enter someone else's username.");
      return;
    }
    try {
      const user = await this.api.userByName(name);
      this.store.rememberUser(user);
      this.newInput.value = "";
      this.onOpenUser(user);
    } catch (err) {
      this.newError.textContent = err.code === "not_found" ? t("No user named “{name}”.", { name }) : errorText(err);
    }
  }

  newGroup() {
    const name = h("input", { name: "group_name", required: true, maxlength: 64, autocomplete: "off" });
    const members = h("textarea", {
      name: "members",
      rows: 3,
      placeholder: t("bob, carol"),
      autocomplete: "off",
      spellcheck: "false",
    });
    openDialog({
      title: t("New group"),
      content: [field(t("Group name"), name), field(t("Members (usernames)"), members)],
      submitLabel: t("Create group"),
      onSubmit: async () => {
        const group = await this.groups.create(name.value.trim(), members.value);
        location.hash = `#/c/${group.conv_id}`;
      },
    });
    name.focus();
  }

  // Finds the shop by its name as the customer types (`shop_search`); a shop given by its id
  // (digits) still opens by id. The shops found are remembered, so the chat's header shows
  // the picked shop's name from the first paint.
  contactShop() {
    const query = h("input", {
      name: "shop",
      type: "search",
      required: true,
      maxlength: 64,
      autocomplete: "off",
      spellcheck: "false",
    });
    const note = h("p", { class: "dialog-note", "aria-live": "polite" }, t("Type the shop's name, or a part of it."));
    const results = h("ul", { class: "shop-results", role: "list", "aria-label": t("Shops found") });
    let found = [];
    let asked = 0; // the latest search: an answer to an older one is dropped
    let timer = 0;
    const search = async () => {
      clearTimeout(timer);
      const q = query.value.trim();
      const mine = ++asked;
      if (!q) {
        found = [];
      } else {
        const shops = await this.service.searchShops(q);
        if (mine !== asked) return;
        found = shops;
      }
      results.replaceChildren(
        ...found.map((shop) =>
          h(
            "li",
            null,
            h("button", { type: "button", class: "shop-result", onclick: () => open(shop.shop_id) }, shop.name),
          ),
        ),
      );
      note.textContent = !q
        ? t("Type the shop's name, or a part of it.")
        : found.length
          ? tn("{n} shop found", "{n} shops found", found.length)
          : t("No shop has a name like that.");
    };
    const open = async (shopId) => {
      dialog.error.textContent = "";
      try {
        await this.onOpenShop(shopId);
        dialog.close();
      } catch (err) {
        dialog.error.textContent = err.message || String(err);
      }
    };
    query.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => search().catch((err) => (note.textContent = err.message)), 150);
    });
    const dialog = openDialog({
      title: t("Chat with a shop"),
      content: [field(t("Shop id or name"), query), note, results],
      submitLabel: t("Open chat"),
      // Enter: the shop named exactly so, else an id, else the best match.
      onSubmit: async () => {
        await search();
        const typed = query.value.trim();
        const exact = found.find((shop) => shop.name.toLowerCase() === typed.toLowerCase());
        const id = exact?.shop_id ?? (/^[0-9]{1,20}$/.test(typed) ? typed : found[0]?.shop_id);
        if (!id) throw new Error(t("No shop has a name like that."));
        await this.onOpenShop(id);
      },
    });
    query.focus();
  }

  maybeLoadMore() {
    const s = this.scroller;
    if (s.scrollHeight - s.scrollTop - s.clientHeight < 80) {
      this.store.loadMoreConversations().catch(() => {});
    }
  }

  render() {
    const store = this.store;
    const total = store.totalUnread;
    this.total.hidden = total === 0;
    this.total.textContent = badgeText(total);
    this.total.setAttribute("aria-label", t("{n} unread", { n: total }));
    document.title = total ? `(${badgeText(total)}) yim` : "yim";

    const requests = this.relations.incoming.length;
    this.requestBadge.hidden = requests === 0;
    this.requestBadge.textContent = badgeText(requests);
    this.requestBadge.setAttribute("aria-label", tn("{n} friend request", "{n} friend requests", requests));
    this.tabBtns.get("agent").hidden = !this.service.isAgent;
    this.renderStatus();
    for (const [link, page] of [
      [this.settingsLink, "settings"],
      [this.adminLink, "admin"],
    ]) {
      if (this.activePage === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }

    this.listStale = this.pressing !== null; // see the constructor
    if (this.tab === "chats") {
      const convs = store.sortedConvs();
      this.presence.watch(convs.filter((c) => c.type === "direct" && c.peer).map((c) => c.peer.user_id));
      if (!this.listStale) {
        clear(this.list);
        for (const conv of convs) this.list.append(this.item(conv));
      }
      this.empty.hidden = convs.length > 0;
      this.more.hidden = !store.listLoading;
    } else if (!this.listStale) {
      // (a stale list is put off until the press ends)
      if (this.tab === "friends") this.friends.render();
      else if (this.tab === "agent") this.agent.render();
    }
  }

  item(conv) {
    const unread = unreadOf(conv);
    const last = conv.last_message;
    const mine = last && last.sender_id === this.store.me.user_id;
    const failed = [...this.store.outbox.values()].some((m) => m.conv_id === conv.conv_id && m.state === "failed");
    const session = conv.type === "service" ? this.service.sessionOf(conv.conv_id) : null;
    const name = convTitle(conv, session ? this.store.user(session.customer_id) : null);
    const many = conv.type !== "direct";
    const who = !last || mine ? "" : many ? displayName(this.store.user(last.sender_id)) + ": " : "";
    const nameOf = (id) => (id === this.store.me.user_id ? t("You") : displayName(this.store.user(id)));
    let preview = "";
    if (failed) preview = t("Message not sent");
    else if (last?.kind === "system") preview = systemText(last, nameOf);
    else if (last?.kind === "recall") preview = t("{who} recalled a message", { who: nameOf(last.sender_id) });
    else if (last?.kind === "edit") preview = t("{who} edited a message", { who: nameOf(last.sender_id) });
    else if (last) preview = (mine ? t("You: ") : who) + messageText(last);
    let face;
    if (conv.type === "direct") {
      face = h("span", { class: "face" }, avatar(conv.peer), presenceDot(this.presence.get(conv.peer?.user_id)));
    }
    else if (session) face = avatar(this.store.user(session.customer_id) ?? { user_id: session.customer_id });
    else face = avatar({ user_id: conv.conv_id, display_name: conv.name });
    const mute = this.pushPrefs?.mode(conv.conv_id) ?? "off";
    const muted =
      mute === "off"
        ? null
        : h(
            "span",
            {
              class: "conv-muted",
              dataset: { mute },
              title: t("Notifications: {mode}", { mode: muteLabel(mute) }),
              "aria-label": t("Notifications: {mode}", { mode: muteLabel(mute) }),
            },
            icon("bellMuted", 14),
          );
    return h(
      "li",
      null,
      h(
        "a",
        {
          href: `#/c/${conv.conv_id}`,
          class: "conv" + (conv.conv_id === this.activeConv ? " active" : "") + (unread ? " has-unread" : ""),
          dataset: { convId: conv.conv_id, type: conv.type },
          "aria-current": conv.conv_id === this.activeConv ? "page" : null,
        },
        face,
        h(
          "span",
          { class: "conv-main" },
          h(
            "span",
            { class: "conv-top" },
            h("span", { class: "conv-name" }, name),
            muted,
            h("time", { class: "conv-time" }, shortWhen(last?.created_at ?? conv.updated_at)),
          ),
          h(
            "span",
            { class: "conv-bottom" },
            conv.mentioned && unread ? h("span", { class: "mention-mark" }, t("[@you]")) : null,
            h("span", { class: "conv-preview" + (failed ? " failed" : "") }, preview),
            unread ? h("span", { class: "badge", "aria-label": t("{n} unread", { n: unread }) }, badgeText(unread)) : null,
          ),
        ),
      ),
    );
  }

  renderStatus() {
    const c = this.store.conn;
    clearInterval(this.countdown);
    let text = "";
    let action = null;
    if (c.state === "connecting") text = t("Connecting…");
    else if (c.state === "waiting") {
      const left = () => Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
      text = t("Offline. Reconnecting in {n} s…", { n: left() });
      action = [t("Retry now"), () => this.store.socket.reconnectNow()];
      this.countdown = setInterval(() => {
        this.bannerText.textContent = t("Offline. Reconnecting in {n} s…", { n: left() });
      }, 1000);
    } else if (c.state === "replaced") {
      text = t("yim is open in another tab or window.");
      action = [t("Use here"), () => this.store.socket.reconnectNow()];
    }
    this.banner.hidden = !text;
    this.banner.dataset.state = c.state;
    this.bannerText.textContent = text;
    this.bannerBtn.hidden = !action;
    if (action) {
      this.bannerBtn.textContent = action[0];
      this.bannerBtn.onclick = action[1];
    }
  }
}
