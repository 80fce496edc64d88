// The "Friends" tab: add a friend by username, answer incoming requests, see sent ones,
// the friends with their presence, and the users one blocked.
import { h } from "../dom.js";
import { avatar, displayName, presenceDot, presenceText } from "../format.js";
import { toast } from "./toast.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

export class FriendsView {
  constructor({ store, api, relations, presence, onOpenUser, onUserMenu }) {
    this.store = store;
    this.api = api;
    this.relations = relations;
    this.presence = presence;
    this.onOpenUser = onOpenUser;
    this.onUserMenu = onUserMenu;

    this.input = h("input", {
      type: "search",
      name: "friend",
      placeholder: t("Username to add"),
      "aria-label": t("Username to add as a friend"),
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      maxlength: 32,
    });
    this.error = h("p", { class: "form-error", role: "alert" });
    this.requests = h("ul", { class: "people", "aria-label": t("Friend requests") });
    this.sent = h("ul", { class: "people", "aria-label": t("Sent requests") });
    this.friends = h("ul", { class: "people", "aria-label": t("Friends") });
    this.blocked = h("ul", { class: "people", "aria-label": t("Blocked users") });
    this.requestsBox = section(t("Friend requests"), this.requests);
    this.sentBox = section(t("Waiting for an answer"), this.sent);
    this.blockedBox = section(t("Blocked"), this.blocked);
    this.empty = h("p", { class: "list-empty" }, t("No friends yet. Add one by username above."));
    this.el = h(
      "div",
      { class: "friends-panel" },
      h(
        "form",
        { class: "new-chat", onsubmit: (e) => this.add(e) },
        this.input,
        h("button", { type: "submit", class: "primary small" }, t("Add")),
      ),
      this.error,
      h(
        "div",
        { class: "conv-scroll" },
        this.requestsBox,
        section(t("Friends"), this.friends),
        this.empty,
        this.sentBox,
        this.blockedBox,
      ),
    );
  }

  async add(e) {
    e.preventDefault();
    const name = this.input.value.trim();
    this.error.textContent = "";
    if (!name) return;
    if (name.toLowerCase() === this.store.me.username.toLowerCase()) {
      this.error.textContent = t("That's you. Enter someone else's username.");
      return;
    }
    try {
      const user = await this.api.userByName(name);
      this.store.rememberUser(user);
      const req = await this.relations.request(user.user_id);
      this.input.value = "";
      const who = displayName(user);
      toast(
        req.status === "accepted"
          ? t("You and {who} are friends now.", { who })
          : t("Friend request sent to {who}.", { who }),
      );
    } catch (err) {
      this.error.textContent =
        err.code === "not_found"
          ? t("No user named “{name}”.", { name })
          : err.code === "already_friends"
            ? t("You are already friends.")
            : err.code === "blocked"
              ? t("You can't send a request to this user.")
              : errorText(err);
    }
  }

  render() {
    const r = this.relations;
    this.requests.replaceChildren(...r.incoming.map((req) => this.requestEl(req)));
    this.requestsBox.hidden = !r.incoming.length;
    this.sent.replaceChildren(...r.outgoing.map((req) => this.sentEl(req)));
    this.sentBox.hidden = !r.outgoing.length;
    const friends = r.sortedFriends();
    this.friends.replaceChildren(...friends.map((f) => this.friendEl(f)));
    this.empty.hidden = friends.length > 0 || !r.loaded;
    this.blocked.replaceChildren(...[...r.blocked.values()].map((u) => this.blockedEl(u)));
    this.blockedBox.hidden = !r.blocked.size;
  }

  friendEl(f) {
    const u = f.user;
    const p = this.presence.get(u.user_id);
    return h(
      "li",
      { class: "person", dataset: { userId: u.user_id } },
      h(
        "button",
        { type: "button", class: "person-main", onclick: () => this.onOpenUser(u) },
        h("span", { class: "face" }, avatar(u, "sm"), presenceDot(p)),
        h(
          "span",
          { class: "person-text" },
          h("span", { class: "person-name" }, f.remark || displayName(u)),
          h("span", { class: "person-sub" }, ["@" + u.username, presenceText(p)].filter(Boolean).join(" · ")),
        ),
      ),
      moreButton(u, this.onUserMenu),
    );
  }

  requestEl(req) {
    const u = this.store.user(req.from_id) ?? { user_id: req.from_id };
    const act = (p) =>
      p.catch((err) => toast(errorText(err)));
    return h(
      "li",
      { class: "person request", dataset: { userId: req.from_id } },
      h(
        "span",
        { class: "person-main" },
        avatar(u, "sm"),
        h(
          "span",
          { class: "person-text" },
          h("span", { class: "person-name" }, displayName(u)),
          h("span", { class: "person-sub" }, req.message || t("wants to be friends")),
        ),
      ),
      h(
        "span",
        { class: "person-actions" },
        h(
          "button",
          { type: "button", class: "primary small", onclick: () => act(this.relations.accept(req.request_id)) },
          t("Accept"),
        ),
        h(
          "button",
          { type: "button", class: "ghost", onclick: () => act(this.relations.reject(req.request_id)) },
          t("Reject"),
        ),
      ),
    );
  }

  sentEl(req) {
    const u = this.store.user(req.to_id) ?? { user_id: req.to_id };
    return h(
      "li",
      { class: "person", dataset: { userId: req.to_id } },
      h(
        "span",
        { class: "person-main" },
        avatar(u, "sm"),
        h(
          "span",
          { class: "person-text" },
          h("span", { class: "person-name" }, displayName(u)),
          h("span", { class: "person-sub" }, t("request sent")),
        ),
      ),
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          onclick: () => this.relations.cancel(req.request_id).catch((err) => toast(errorText(err))),
        },
        t("Cancel"),
      ),
    );
  }

  blockedEl(u) {
    return h(
      "li",
      { class: "person", dataset: { userId: u.user_id } },
      h(
        "span",
        { class: "person-main" },
        avatar(u, "sm"),
        h("span", { class: "person-text" }, h("span", { class: "person-name" }, displayName(u))),
      ),
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          onclick: () => this.relations.unblock(u.user_id).catch((err) => toast(errorText(err))),
        },
        t("Unblock"),
      ),
    );
  }
}

function section(title, list) {
  return h("section", { class: "people-section" }, h("h3", { class: "section-title" }, title), list);
}

function moreButton(user, onUserMenu) {
  return h(
    "button",
    {
      type: "button",
      class: "ghost more-btn",
      "aria-label": t("More about {name}", { name: displayName(user) }),
      title: t("More"),
      onclick: (e) => onUserMenu(user, e.currentTarget),
    },
    "⋯",
  );
}
