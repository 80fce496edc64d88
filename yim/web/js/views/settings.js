// The settings page (#/settings), for everyone: my display name, my password, the page's
// language, and the shops I run (open a shop, add or remove its agents). Everything but the
// language goes to the server first; the page shows what the server answered.
import { h } from "../dom.js";
import { errorText as codeText } from "../errors.js";
import { downloadArchive } from "../export.js";
import { avatar, shopRole } from "../format.js";
import { confirmAction, field } from "./dialog.js";
import { toast } from "./toast.js";
import { LANGUAGES, language, setLanguage, t, tn } from "../i18n.js";

const PASSWORD_MIN = 8;

// What an avatar upload or change can be refused for (docs/protocol.md §16.1, §19.4).
const AVATAR_TYPES = "image/jpeg,image/png,image/gif,image/webp,image/avif";

function errorText(err) {
  return codeText(err, "agents");
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
  constructor({ store, api, service, webpush, pushPrefs, onProfile }) {
    this.store = store;
    this.pushPrefs = pushPrefs ?? null;
    this.webpush = webpush;
    this.api = api;
    this.service = service;
    this.onProfile = onProfile;
    this.shopsBox = h("div", { class: "page-shops" });
    this.el = h(
      "section",
      { class: "page settings-page", "aria-label": t("Settings") },
      h(
        "header",
        { class: "page-head" },
        h("a", { class: "back", href: "#/", "aria-label": t("Back to chats") }, "‹"),
        h("h2", { class: "page-title" }, t("Settings")),
      ),
      h(
        "div",
        { class: "page-body" },
        this.profileSection(),
        this.passwordSection(),
        this.languageSection(),
        this.shopsSection(),
        this.pushSection(),
        this.dataSection(),
        this.deleteSection(),
      ),
    );
    service.addEventListener("change", () => this.renderShops());
    webpush.addEventListener("change", () => this.renderPush());
    pushPrefs?.addEventListener("change", () => this.renderPushPrefs());
  }

  show() {
    this.nameInput.value = this.store.me.display_name ?? "";
    this.renderAvatar();
    this.renderShops();
    this.api.accountDeletion().then(
      ({ due_at }) => this.showDeletion(due_at),
      () => {}, // the section keeps what it showed; the form still works
    );
  }

  // Delete my account (docs/protocol.md §19.8): the password, then a confirmation; the
  // deletion runs after the server's grace period, and logging in before then cancels it.
  deleteSection() {
    const pw = h("input", { type: "password", name: "delete_password", required: true, autocomplete: "current-password" });
    this.deletionState = h("p", { class: "page-note deletion-state", role: "status" });
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-delete" },
      h("h3", { id: "settings-delete" }, t("Delete my account")),
      h(
        "p",
        { class: "page-note" },
        t(
          "Your account is deleted after a waiting period: then you cannot log in any more, your profile is blanked, your messages are cleared and you leave your groups. Logging in during the waiting period cancels the deletion.",
        ),
      ),
      this.deletionState,
      asyncForm(
        t("Delete my account"),
        [field(t("Your password"), pw)],
        t("Delete my account…"),
        () =>
          new Promise((resolve, reject) => {
            confirmAction({
              title: t("Delete your account?"),
              text: t("You are signed out when the waiting period ends, and your account cannot come back after that."),
              confirmLabel: t("Delete my account"),
              onConfirm: async () => {
                try {
                  const { due_at } = await this.api.deleteAccount(pw.value);
                  pw.value = "";
                  this.showDeletion(due_at);
                  resolve(this.deletionState.textContent);
                } catch (err) {
                  reject(err);
                }
              },
            }).el.addEventListener("close", () => resolve(""));
          }),
      ),
    );
  }

  showDeletion(dueAt) {
    this.deletionState.textContent =
      dueAt == null
        ? ""
        : t("Your account will be deleted on {when}. Log in again before then to cancel the deletion.", {
            when: new Date(dueAt).toLocaleString(),
          });
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
        error.textContent = codeText(err, "avatar");
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
      h("h3", { id: "settings-profile" }, t("Profile")),
      this.avatarPicker(),
      asyncForm(
        t("Profile"),
        [
          field(t("Display name"), this.nameInput),
          h("p", { class: "page-note" }, t("Others see this name. Leave it empty to show your username.")),
        ],
        t("Save name"),
        async () => {
          const user = await this.api.setDisplayName(this.nameInput.value.trim());
          this.nameInput.value = user.display_name;
          this.onProfile(user);
          return t("Your name is now “{name}”.", { name: user.display_name });
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
      h("h3", { id: "settings-password" }, t("Password")),
      asyncForm(
        t("Change password"),
        [field(t("Current password"), old), field(t("New password"), next), field(t("New password again"), again)],
        t("Change password"),
        async () => {
          if (next.value.length < PASSWORD_MIN) {
            throw new Error(t("A password has at least {n} characters.", { n: PASSWORD_MIN }));
          }
          if (next.value !== again.value) throw new Error(t("The two new passwords differ. Type the same one twice."));
          const { revoked } = await this.api.changePassword(old.value, next.value);
          old.value = next.value = again.value = "";
          const others =
            revoked === 0
              ? t("No other session was signed in.")
              : tn("{n} other session was signed out.", "{n} other sessions were signed out.", revoked);
          return t("Password changed. This session stays signed in; {others}", { others });
        },
      ),
    );
  }

  // The page's language: saved in this browser only, applied by reloading the page.
  languageSection() {
    const select = h(
      "select",
      { class: "select", name: "language", "aria-label": t("Language") },
      LANGUAGES.map(([code, name]) => h("option", { value: code, lang: code, selected: code === language() }, name)),
    );
    select.addEventListener("change", () => setLanguage(select.value));
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-language" },
      h("h3", { id: "settings-language" }, t("Language")),
      h("p", { class: "page-note" }, t("The language of this page in this browser.")),
      select,
    );
  }

  // "Download my data" (docs/protocol.md §19.7): everything this account could see, as a zip.
  dataSection() {
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-data" },
      h("h3", { id: "settings-data" }, t("Your data")),
      asyncForm(
        t("Download my data"),
        h(
          "p",
          { class: "page-note" },
          t(
            "One zip file with your profile, devices, friends, groups, the messages you can see and their files. A long history takes a while before the download starts.",
          ),
        ),
        t("Download my data"),
        async () => {
          try {
            return t("Saved {name}.", { name: await downloadArchive(this.api, "/api/v1/me/export") });
          } catch (err) {
            if (err.code !== "export_busy") throw err;
            throw new Error(t("The server is building other exports right now. Try again in a minute."));
          }
        },
      ),
    );
  }

  shopsSection() {
    const name = h("input", { name: "shop_name", required: true, maxlength: 64, autocomplete: "off" });
    return h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-shops" },
      h("h3", { id: "settings-shops" }, t("My shops")),
      h(
        "p",
        { class: "page-note" },
        t("Customers write to a shop, and its agents answer. You run the shops you open here; give customers the shop's id."),
      ),
      this.shopsBox,
      asyncForm(t("Open a shop"), field(t("New shop name"), name), t("Open shop"), async () => {
        const shop = await this.service.createShop(name.value.trim());
        name.value = "";
        return t("Shop “{name}” is open. Its id is {id}.", { name: shop.name, id: shop.shop_id });
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
      ...(els.length ? els : [h("p", { class: "list-empty" }, t("You do not run or serve any shop."))]),
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
        h("span", { class: "agent-role" }, shopRole(a.role)),
        admin && a.user_id !== this.store.me.user_id
          ? h(
              "button",
              {
                type: "button",
                class: "ghost small",
                "aria-label": t("Remove {who} from {shop}", { who, shop: shop.name }),
                onclick: () =>
                  confirmAction({
                    title: t("Remove {who}?", { who }),
                    text: t("{who} stops serving {shop}; their open customers go to other agents.", {
                      who,
                      shop: shop.name,
                    }),
                    confirmLabel: t("Remove"),
                    onConfirm: () =>
                      this.service.removeAgent(shop.shop_id, a.user_id).catch((err) => {
                        throw new Error(errorText(err));
                      }),
                  }),
              },
              t("Remove"),
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
        { class: "select", name: "agent_role", "aria-label": t("Role") },
        h("option", { value: "agent" }, t("agent")),
        h("option", { value: "admin" }, t("admin")),
      );
      addForm = asyncForm(
        t("Add an agent to {shop}", { shop: shop.name }),
        h("div", { class: "inline-fields" }, field(t("Agent's username"), username), role),
        t("Add agent"),
        async () => {
          const name = username.value.trim();
          let user;
          try {
            user = await this.api.userByName(name);
          } catch (err) {
            if (err.code === "not_found") throw new Error(t("No user named “{name}”.", { name }));
            throw err;
          }
          this.store.rememberUser(user);
          await this.service.setAgent(shop.shop_id, user.user_id, role.value);
          username.value = "";
          const who = user.display_name || user.username;
          return role.value === "admin"
            ? t("{who} is now an admin of {shop}.", { who, shop: shop.name })
            : t("{who} is now an agent of {shop}.", { who, shop: shop.name });
        },
      );
    }
    const list = h("ul", { class: "agent-list", "aria-label": t("Agents of {shop}", { shop: shop.name }) });
    const el = h(
      "section",
      { class: "page-shop", "aria-label": t("Shop {name}", { name: shop.name }), dataset: { shopId: shop.shop_id } },
      h(
        "h4",
        null,
        shop.name,
        " ",
        h("span", { class: "page-note" }, t("id {id} · you are {role}", { id: shop.shop_id, role: shopRole(me?.role ?? "agent") })),
      ),
      list,
      addForm,
    );
    return { el, list, admin };
  }

  // Web Push for this browser (webpush.js): a switch, and a status line saying what the
  // browser and the node allow. Turning the switch off and on again retries a failure.
  pushSection() {
    this.pushSwitch = h("input", {
      type: "checkbox",
      role: "switch",
      name: "push",
      onchange: () => (this.pushSwitch.checked ? this.webpush.enable() : this.webpush.disable()),
    });
    this.pushStatus = h("p", { class: "push-status", role: "status" });
    const section = h(
      "section",
      { class: "page-section", "aria-labelledby": "settings-push" },
      h("h3", { id: "settings-push" }, t("Notifications")),
      h("label", { class: "push-switch" }, this.pushSwitch, " ", t("Notify me of new messages while yim is closed")),
      this.pushStatus,
      this.pushPrefs ? this.pushPrefsForms() : null,
    );
    this.renderPush();
    return section;
  }

  // What every device of mine is pushed (docs/protocol.md §20.2): the message itself or only
  // who wrote, and quiet hours, typed in this browser's time zone and sent with it.
  pushPrefsForms() {
    this.previewSwitch = h("input", {
      type: "checkbox",
      role: "switch",
      name: "preview",
      disabled: true, // until the server's settings are in
      onchange: async () => {
        const want = this.previewSwitch.checked;
        this.previewSwitch.disabled = true;
        try {
          await this.pushPrefs.save({ preview: want });
        } catch (err) {
          toast(errorText(err));
        } finally {
          this.renderPushPrefs();
        }
      },
    });
    this.quietOn = h("input", { type: "checkbox", name: "dnd_on" });
    this.quietFrom = h("input", { type: "time", name: "dnd_from", value: "22:00", required: true });
    this.quietTo = h("input", { type: "time", name: "dnd_to", value: "07:00", required: true });
    this.quietNote = h("p", { class: "page-note quiet-note" });
    this.quietShown = null; // the dnd the inputs show: redrawn only when the server's differs
    const quiet = asyncForm(
      t("Quiet hours"),
      [
        h("label", { class: "push-switch" }, this.quietOn, " ", t("Quiet hours: hold notifications until they end")),
        h("div", { class: "quiet-times" }, field(t("From"), this.quietFrom), field(t("To"), this.quietTo)),
        this.quietNote,
      ],
      t("Save quiet hours"),
      async () => {
        const on = this.quietOn.checked;
        if (on && this.quietFrom.value === this.quietTo.value) {
          throw new Error(t("Quiet hours must start and end at different times."));
        }
        await this.pushPrefs.save({ dnd: on ? `${this.quietFrom.value}-${this.quietTo.value}` : "" });
        return on
          ? t("Quiet hours are on: {from} to {to}.", { from: this.quietFrom.value, to: this.quietTo.value })
          : t("Quiet hours are off.");
      },
    );
    this.renderPushPrefs();
    return h(
      "div",
      { class: "push-prefs" },
      h("label", { class: "push-switch" }, this.previewSwitch, " ", t("Show the message in notifications")),
      h(
        "p",
        { class: "page-note" },
        t("Off: a notification says only who wrote, not what. This applies to all your devices."),
      ),
      quiet,
    );
  }

  renderPushPrefs() {
    if (!this.previewSwitch) return;
    const p = this.pushPrefs;
    this.previewSwitch.checked = p.preview;
    this.previewSwitch.disabled = !p.loaded;
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    this.quietNote.textContent =
      p.dnd && p.timeZone && p.timeZone !== zone
        ? t("Set in the time zone {zone}. Saving sets them in this browser's time zone, {here}.", {
            zone: p.timeZone,
            here: zone,
          })
        : t("In this browser's time zone, {zone}. Mentions are held too.", { zone });
    if (p.loaded && p.dnd !== this.quietShown) {
      this.quietShown = p.dnd;
      const [from, to] = p.dnd ? p.dnd.split("-") : ["22:00", "07:00"];
      this.quietOn.checked = !!p.dnd;
      this.quietFrom.value = from;
      this.quietTo.value = to;
    }
  }

  renderPush() {
    const { state, reason } = this.webpush;
    const text = {
      checking: () => t("Checking whether this server sends push notifications…"),
      unsupported: () => t("Unavailable: this browser cannot receive push notifications."),
      server_off: () => t("Unavailable: this server does not send push notifications."),
      blocked: () =>
        t("Blocked: notifications for this site are blocked in the browser's settings. Allow them there to turn this on."),
      ask: () => t("Off. Turn it on, then allow notifications when the browser asks."),
      off: () => t("Off."),
      subscribing: () => t("Turning on…"),
      on: () => t("On: new messages show a notification on this device even while yim is closed."),
      failed: () =>
        t("Unavailable: no push service reachable ({reason}). New messages notify only while yim is open in a tab.", {
          reason,
        }),
      error: () => t("Could not turn on push notifications: {reason}", { reason }),
    }[state];
    this.pushStatus.textContent = text?.() ?? "";
    this.pushStatus.dataset.state = state;
    this.pushSwitch.checked = ["on", "subscribing", "failed", "error"].includes(state);
    this.pushSwitch.disabled = ["checking", "unsupported", "server_off", "blocked", "subscribing"].includes(state);
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
      .catch(() => toast(t("Could not load an agent's name.")));
  }
}
