// The left column: who I am, total unread, connection state, "start a chat", and the
// conversation list with unread badges.
import { clear, h } from "../dom.js";
import { avatar, convTitle, displayName, messageText, shortWhen } from "../format.js";
import { unreadOf } from "../store.js";

function badgeText(n) {
  return n > 99 ? "99+" : String(n);
}

export class Sidebar {
  constructor({ store, api, onLogout, onOpenUser }) {
    this.store = store;
    this.api = api;
    this.onOpenUser = onOpenUser;
    this.activeConv = null;
    this.countdown = 0;

    this.meName = h("span", { class: "me-name" });
    this.meAvatar = h("span", { class: "me-avatar" });
    this.total = h("span", { class: "badge total-unread", title: "Unread messages", hidden: true });
    this.bannerText = h("span", { class: "conn-text" });
    this.bannerBtn = h("button", { type: "button", class: "link conn-action", hidden: true });
    this.banner = h("div", { class: "conn-banner", role: "status", hidden: true }, this.bannerText, this.bannerBtn);
    this.newInput = h("input", {
      type: "search",
      name: "peer",
      placeholder: "Username to chat with",
      "aria-label": "Username to chat with",
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      maxlength: 32,
    });
    this.newError = h("p", { class: "form-error", role: "alert" });
    this.list = h("ul", { class: "conv-list", "aria-label": "Conversations" });
    this.empty = h("p", { class: "list-empty" }, "No conversations yet. Start one with a username above.");
    this.more = h("p", { class: "list-more", hidden: true }, "Loading…");
    this.scroller = h("nav", { class: "conv-scroll" }, this.list, this.empty, this.more);
    this.scroller.addEventListener("scroll", () => this.maybeLoadMore(), { passive: true });

    this.el = h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        { class: "me-bar" },
        this.meAvatar,
        h("div", { class: "me-text" }, this.meName, h("span", { class: "me-handle" }, "@" + store.me.username)),
        this.total,
        h("button", { type: "button", class: "ghost logout", onclick: onLogout, title: "Log out" }, "Log out"),
      ),
      this.banner,
      h(
        "form",
        { class: "new-chat", onsubmit: (e) => this.startChat(e) },
        this.newInput,
        h("button", { type: "submit", class: "primary small" }, "Chat"),
      ),
      this.newError,
      this.scroller,
    );
    this.renderMe();
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
    if (name === this.store.me.username) {
      this.newError.textContent = "That's you. Enter someone else's username.";
      return;
    }
    try {
      const user = await this.api.userByName(name);
      this.store.rememberUser(user);
      this.newInput.value = "";
      this.onOpenUser(user);
    } catch (err) {
      this.newError.textContent = err.code === "not_found" ? `No user named "${name}".` : err.message;
    }
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
    this.total.setAttribute("aria-label", `${total} unread`);
    document.title = total ? `(${badgeText(total)}) yim` : "yim";

    const convs = store.sortedConvs();
    clear(this.list);
    for (const conv of convs) this.list.append(this.item(conv));
    this.empty.hidden = convs.length > 0;
    this.more.hidden = !store.listLoading;
    this.renderStatus();
  }

  item(conv) {
    const unread = unreadOf(conv);
    const last = conv.last_message;
    const mine = last && last.sender_id === this.store.me.user_id;
    const failed = [...this.store.outbox.values()].some((m) => m.conv_id === conv.conv_id && m.state === "failed");
    const name = convTitle(conv);
    const group = conv.type === "group";
    const who = !last || mine ? "" : group ? displayName(this.store.user(last.sender_id)) + ": " : "";
    const preview = failed ? "Message not sent" : last ? (mine ? "You: " : who) + messageText(last) : "";
    return h(
      "li",
      null,
      h(
        "a",
        {
          href: `#/c/${conv.conv_id}`,
          class: "conv" + (conv.conv_id === this.activeConv ? " active" : "") + (unread ? " has-unread" : ""),
          dataset: { convId: conv.conv_id },
          "aria-current": conv.conv_id === this.activeConv ? "page" : null,
        },
        group ? avatar({ user_id: conv.conv_id, display_name: conv.name }) : avatar(conv.peer),
        h(
          "span",
          { class: "conv-main" },
          h(
            "span",
            { class: "conv-top" },
            h("span", { class: "conv-name" }, name),
            h("time", { class: "conv-time" }, shortWhen(last?.created_at ?? conv.updated_at)),
          ),
          h(
            "span",
            { class: "conv-bottom" },
            h("span", { class: "conv-preview" + (failed ? " failed" : "") }, preview),
            unread ? h("span", { class: "badge", "aria-label": `${unread} unread` }, badgeText(unread)) : null,
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
    if (c.state === "connecting") text = "Connecting…";
    else if (c.state === "waiting") {
      const left = () => Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
      text = `Offline. Reconnecting in ${left()} s…`;
      action = ["Retry now", () => this.store.socket.reconnectNow()];
      this.countdown = setInterval(() => {
        this.bannerText.textContent = `Offline. Reconnecting in ${left()} s…`;
      }, 1000);
    } else if (c.state === "replaced") {
      text = "yim is open in another tab or window.";
      action = ["Use here", () => this.store.socket.reconnectNow()];
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
