// The settings page (#/settings), for everyone: my display name, my password, and the
// shops I run (open a shop, add or remove its agents). Everything goes to the server first;
// the page shows what the server answered.
import { h } from "../dom.js";
import { avatar } from "../format.js";
import { t } from "../i18n.js";
import { confirmAction, field } from "./dialog.js";
import { toast } from "./toast.js";

const PASSWORD_MIN = 8;
const ERRORS = {
  wrong_password: "The current password is not right. Nothing was changed.",
  content_blocked: "That name is not allowed here. Choose another one.",
  forbidden: "Only the shop's admins can change its agents.",
};

// What an avatar upload or change can be refused for (docs/protocol.md §16.1, §19.4).
const AVATAR_ERRORS = {
  media_too_large: "That picture is too large. Choose a smaller one.",
  media_type_mismatch: "That file is not a picture. Choose a JPEG, PNG, GIF, WebP or AVIF image.",
  media_type_not_allowed: "That kind of picture is not accepted. Choose a JPEG, PNG, GIF, WebP or AVIF image.",
  invalid_media: "That picture cannot be read. Choose another one.",
  media_kind_mismatch: "That file is not a picture. Choose a JPEG, PNG, GIF, WebP or AVIF image.",
};
const AVATAR_TYPES = "image/jpeg,image/png,image/gif,image/webp,image/avif";

function errorText(err) {
  return ERRORS[err.code] ?? err.message ?? "Something went wrong. Try again.";
}

// A form whose submit is async: the button is disabled meanwhile, and the outcome is
// written into the form's own status line (an alert for errors).
function asyncForm(label, children, submitLabel, run) {
  const status = h("p", { class: "form-status", role: "status" });
  const error = h("p", { class: "form-error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary small" }, submitLabel);
  const form = h(
    "form",
    {
      class: "page-form",
      "aria-label": label,
      onsubmit: async (e) => {
        e.preventDefault();
        status.textContent = "";
        error.textContent = "";
        button.disabled = true;
        try {
          status.textContent = (await run()) ?? "";
        } catch (err) {
          error.textContent = errorText(err);
        } finally {
          button.disabled = false;
        }
      },
    },
    children,
    h("div", { class: "page-form-actions" }, button),
    status,
    error,
  );
  return form;
}

export class SettingsView {
  constructor({ store, api, service, onProfile }) {
    this.store = store;
    this.api = api;
    this.service = service;
    this.onProfile = onProfile;
    this.shopsBox = h("div", { class: "page-shops" });
    this.el = h(
      "section",
      { class: "page settings-page", "aria-label": "Settings" },
      h(
        "header",
        { class: "page-head" },
        h("a", { class: "back", href: "#/", "aria-label": "Back to chats" }, "‹"),
        h("h2", { class: "page-title" }, "Settings"),
      ),
      h("div", { class: "page-body" }, this.profileSection(), this.passwordSection(), this.shopsSection()),
    );
    service.addEventListener("change", () => this.renderShops());
  }

  show() {
    this.nameInput.value = this.store.me.display_name ?? "";
    this.renderAvatar();
    this.renderShops();
  }

  // My picture: upload (then it is set), preview, remove. Others see it by a profile notice.
  avatarPicker() {
    this.avatarPreview = h("span", { class: "avatar-preview" });
    const status = h("p", { class: "form-status", role: "status" });
    const error = h("p", { class: "form-error", role: "alert" });
    const busy = (on) => {
      choose.disabled = on;
      this.avatarRemove.disabled = on || !this.store.me.avatar;
    };
    const apply = async (work, done) => {
      status.textContent = "";
      error.textContent = "";
      busy(true);
      try {
        const user = await work();
        this.onProfile(user);
        status.textContent = done;
      } catch (err) {
        error.textContent = AVATAR_ERRORS[err.code] ? t(AVATAR_ERRORS[err.code]) : errorText(err);
      } finally {
        busy(false);
        this.renderAvatar();
      }
    };
    const input = h("input", { type: "file", accept: AVATAR_TYPES, class: "avatar-file", "aria-label": t("Picture file") });
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      input.value = "";
      if (!file) return;
      apply(async () => {
        const media = await this.api.upload(file, "image");
        return this.api.setAvatar(media.media_id);
      }, t("Your picture is set. Others see it now."));
    });
    const choose = h(
      "button",
      { type: "button", class: "primary small", onclick: () => input.click() },
      t("Upload a picture"),
    );
    this.avatarRemove = h(
      "button",
      {
        type: "button",
        class: "ghost",
        onclick: () => apply(() => this.api.setAvatar(""), t("Your picture is removed. Others see your initials.")),
      },
      t("Remove picture"),
    );
    return h(
      "div",
      { class: "avatar-picker", role: "group", "aria-label": t("Picture") },
      this.avatarPreview,
      h("div", { class: "avatar-picker-actions" }, choose, this.avatarRemove, input),
      status,
      error,
    );
  }

  renderAvatar() {
    this.avatarPreview.replaceChildren(avatar(this.store.me, "lg"));
    this.avatarRemove.disabled = !this.store.me.avatar;
  }

  profileSection() {
    this.nameInput = h("input", { name: "display_name", maxlength: 64, autocomplete: "nickname" });
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-profile" },
      h("h3", { id: "settings-profile" }, "Profile"),
      this.avatarPicker(),
      asyncForm(
        "Profile",
        [
          field("Display name", this.nameInput),
          h("p", { class: "page-note" }, "Others see this name. Leave it empty to show your username."),
        ],
        "Save name",
        async () => {
          const user = await this.api.setDisplayName(this.nameInput.value.trim());
          this.nameInput.value = user.display_name;
          this.onProfile(user);
          return `Your name is now “${user.display_name}”.`;
        },
      ),
    );
  }

  passwordSection() {
    const old = h("input", { type: "password", name: "old_password", required: true, autocomplete: "current-password" });
    const next = h("input", {
      type: "password",
      name: "new_password",
      required: true,
      minlength: PASSWORD_MIN,
      maxlength: 256,
      autocomplete: "new-password",
    });
    const again = h("input", { type: "password", name: "new_password_again", required: true, autocomplete: "new-password" });
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-password" },
      h("h3", { id: "settings-password" }, "Password"),
      asyncForm(
        "Change password",
        [field("Current password", old), field("New password", next), field("New password again", again)],
        "Change password",
        async () => {
          if (next.value.length < PASSWORD_MIN) throw new Error(`A password has at least ${PASSWORD_MIN} characters.`);
          if (next.value !== again.value) throw new Error("The two new passwords differ. Type the same one twice.");
          const { revoked } = await this.api.changePassword(old.value, next.value);
          old.value = next.value = again.value = "";
          const others =
            revoked === 0
              ? "No other session was signed in."
              : `${revoked} other ${revoked === 1 ? "session was" : "sessions were"} signed out.`;
          return `Password changed. This session stays signed in; ${others}`;
        },
      ),
    );
  }

  shopsSection() {
    const name = h("input", { name: "shop_name", required: true, maxlength: 64, autocomplete: "off" });
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-shops" },
      h("h3", { id: "settings-shops" }, "My shops"),
      h(
        "p",
        { class: "page-note" },
        "Customers write to a shop, and its agents answer. You run the shops you open here; give customers the shop's id.",
      ),
      this.shopsBox,
      asyncForm("Open a shop", field("New shop name", name), "Open shop", async () => {
        const shop = await this.service.createShop(name.value.trim());
        name.value = "";
        return `Shop “${shop.name}” is open. Its id is ${shop.shop_id}.`;
      }),
    );
  }

  // Each shop's element is kept while the shop is there (so a form's outcome survives the
  // re-render that the change itself causes); its agent list is redrawn.
  renderShops() {
    this.shopEls ??= new Map(); // shop_id -> {el, list, admin}
    const entries = [...this.service.shops.values()];
    const els = entries.map((entry) => {
      const admin = entry.me?.role === "admin";
      let known = this.shopEls.get(entry.shop.shop_id);
      if (!known || known.admin !== admin) {
        known = this.shopEl(entry, admin);
        this.shopEls.set(entry.shop.shop_id, known);
      }
      known.list.replaceChildren(...this.agentRows(entry, admin));
      return known.el;
    });
    for (const id of this.shopEls.keys()) if (!this.service.shops.has(id)) this.shopEls.delete(id);
    this.shopsBox.replaceChildren(
      ...(els.length ? els : [h("p", { class: "list-empty" }, "You do not run or serve any shop.")]),
    );
  }

  agentRows({ shop, agents }, admin) {
    return agents.map((a) => {
      const user = this.store.users.get(a.user_id);
      const who = user ? `${user.display_name || user.username} (@${user.username})` : a.user_id;
      if (!user) this.fetchUser(a.user_id);
      return h(
        "li",
        { class: "agent-row", dataset: { userId: a.user_id } },
        h("span", { class: "agent-name" }, who),
        h("span", { class: "agent-role" }, a.role),
        admin && a.user_id !== this.store.me.user_id
          ? h(
              "button",
              {
                type: "button",
                class: "ghost small",
                "aria-label": `Remove ${who} from ${shop.name}`,
                onclick: () =>
                  confirmAction({
                    title: `Remove ${who}?`,
                    text: `${who} stops serving ${shop.name}; their open customers go to other agents.`,
                    confirmLabel: "Remove",
                    onConfirm: () =>
                      this.service.removeAgent(shop.shop_id, a.user_id).catch((err) => {
                        throw new Error(errorText(err));
                      }),
                  }),
              },
              "Remove",
            )
          : null,
      );
    });
  }

  shopEl({ shop, me }, admin) {
    let addForm = null;
    if (admin) {
      const username = h("input", { name: "agent_username", required: true, maxlength: 32, autocomplete: "off" });
      const role = h(
        "select",
        { class: "select", name: "agent_role", "aria-label": "Role" },
        h("option", { value: "agent" }, "agent"),
        h("option", { value: "admin" }, "admin"),
      );
      addForm = asyncForm(
        `Add an agent to ${shop.name}`,
        h("div", { class: "inline-fields" }, field("Agent's username", username), role),
        "Add agent",
        async () => {
          const name = username.value.trim();
          let user;
          try {
            user = await this.api.userByName(name);
          } catch (err) {
            if (err.code === "not_found") throw new Error(`No user named “${name}”.`);
            throw err;
          }
          this.store.rememberUser(user);
          await this.service.setAgent(shop.shop_id, user.user_id, role.value);
          username.value = "";
          const what = role.value === "admin" ? "an admin" : "an agent";
          return `${user.display_name || user.username} is now ${what} of ${shop.name}.`;
        },
      );
    }
    const list = h("ul", { class: "agent-list", "aria-label": `Agents of ${shop.name}` });
    const el = h(
      "section",
      { class: "page-shop", "aria-label": `Shop ${shop.name}`, dataset: { shopId: shop.shop_id } },
      h(
        "h4",
        null,
        shop.name,
        " ",
        h("span", { class: "page-note" }, `id ${shop.shop_id} · you are ${me?.role ?? "agent"}`),
      ),
      list,
      addForm,
    );
    return { el, list, admin };
  }

  fetchUser(userId) {
    this.pending ??= new Set();
    if (this.pending.has(userId)) return;
    this.pending.add(userId);
    this.api
      .user(userId)
      .then((user) => {
        this.store.rememberUser(user);
        this.renderShops();
      })
      .catch(() => toast("Could not load an agent's name."));
  }
}
