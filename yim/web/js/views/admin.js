// The Admin page (#/admin), for server admins only (docs/protocol.md §19): users (search,
// paging, one user's detail and actions), groups (dissolve, transfer), shops (open one for a
// user, set an agent) and the audit log. Every change asks for a reason, which the audit
// log keeps; the page shows the server's answer, never a guess.
import { h } from "../dom.js";
import { errorText as codeText } from "../errors.js";
import { downloadArchive } from "../export.js";
import { dateTime, groupRole } from "../format.js";
import { field, openDialog } from "./dialog.js";
import { REPORTS_SECTION, ReportsQueue } from "./reports.js";
import { toast } from "./toast.js";
import { t, tn } from "../i18n.js";

const PAGE = 50;
const SECTIONS = [
  ["users", t("Users")],
  ["groups", t("Groups")],
  ["shops", t("Shops")],
  ["audit", t("Audit log")],
  REPORTS_SECTION,
];

function errorText(err) {
  return codeText(err, "admin");
}

function when(ms) {
  return dateTime(ms);
}

function reasonInput() {
  return h("input", { name: "reason", maxlength: 500, autocomplete: "off", placeholder: t("Kept in the audit log") });
}

// Asks for a reason (and whatever else `content` holds), then runs `run(reason)`. Errors
// stay in the dialog; `done` is toasted on success.
function actionDialog({ title, text, content = [], confirmLabel, danger = false, run }) {
  const reason = reasonInput();
  const dlg = openDialog({
    title,
    content: [text ? h("p", { class: "dialog-note" }, text) : null, ...content, field(t("Reason"), reason)],
    submitLabel: confirmLabel,
    danger,
    onSubmit: async () => {
      try {
        const done = await run(reason.value.trim());
        if (done) toast(done);
      } catch (err) {
        throw new Error(errorText(err));
      }
    },
  });
  (dlg.el.querySelector("input:not([name=reason])") ?? reason).focus();
  return dlg;
}

function table(label, headers, rows) {
  return h(
    "table",
    { class: "admin-table", "aria-label": label },
    h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, rows),
  );
}

function searchForm(label, placeholder, onSearch) {
  const q = h("input", { type: "search", name: "q", maxlength: 64, placeholder, "aria-label": label, autocomplete: "off" });
  return h(
    "form",
    {
      class: "admin-search",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        onSearch(q.value.trim());
      },
    },
    q,
    h("button", { type: "submit", class: "primary small" }, t("Search")),
  );
}

export class AdminView {
  constructor({ api, store, onForbidden }) {
    this.api = api;
    this.store = store;
    this.onForbidden = onForbidden;
    this.section = "users";
    this.names = new Map(); // user_id -> username, for the audit log and groups
    this.users = { q: "", rows: [], next: null };
    this.groups = { q: "", rows: [], next: null };
    this.audit = { rows: [], next: null };
    this.detail = null; // AdminUserDetail on show
    this.reports = new ReportsQueue(this); // the report queue (views/reports.js)
    this.tabBtns = new Map();
    for (const [id, label] of SECTIONS) {
      this.tabBtns.set(
        id,
        h(
          "button",
          { type: "button", role: "tab", class: "tab", id: "admin-tab-" + id, onclick: () => this.showSection(id) },
          label,
        ),
      );
    }
    this.body = h("div", { class: "page-body admin-body", role: "tabpanel" });
    this.el = h(
      "section",
      { class: "page admin-page", "aria-label": t("Admin") },
      h(
        "header",
        { class: "page-head" },
        h("a", { class: "back", href: "#/", "aria-label": t("Back to chats") }, "‹"),
        h("h2", { class: "page-title" }, t("Server administration")),
      ),
      h("nav", { class: "tabs", role: "tablist", "aria-label": t("Admin sections") }, [...this.tabBtns.values()]),
      this.body,
    );
  }

  show() {
    this.showSection(this.section);
  }

  showSection(id) {
    this.section = id;
    for (const [tid, btn] of this.tabBtns) {
      btn.setAttribute("aria-selected", tid === id ? "true" : "false");
      btn.tabIndex = tid === id ? 0 : -1;
    }
    this.body.setAttribute("aria-labelledby", "admin-tab-" + id);
    if (id === "users") this.loadUsers(this.users.q);
    else if (id === "groups") this.loadGroups(this.groups.q);
    else if (id === "audit") this.loadAudit();
    else if (id === "reports") this.reports.load();
    else this.renderShops();
  }

  // One admin request: a `forbidden` means this account is no admin (any more).
  async call(method, path, opts) {
    try {
      return await this.api.admin(method, path, opts);
    } catch (err) {
      if (err.code === "forbidden") this.onForbidden();
      throw err;
    }
  }

  // The section's content; absent parts (null) are left out (replaceChildren would write "null").
  fill(...parts) {
    this.body.replaceChildren(...parts.filter(Boolean));
  }

  failed(err) {
    this.body.replaceChildren(h("p", { class: "form-error", role: "alert" }, errorText(err)));
  }

  // --- users ------------------------------------------------------------------------------
  async loadUsers(q, more = false) {
    try {
      const page = await this.call("GET", "/users", {
        query: { q, limit: PAGE, after: more ? this.users.next : null },
      });
      this.users = { q, rows: more ? [...this.users.rows, ...page.users] : page.users, next: page.next_after };
      this.renderUsers();
    } catch (err) {
      this.failed(err);
    }
  }

  renderUsers() {
    const { q, rows, next } = this.users;
    const search = searchForm(t("Search users"), t("Username, name or id"), (text) => {
      this.detail = null;
      this.loadUsers(text);
    });
    search.querySelector("input").value = q;
    const trs = rows.map((u) =>
      h(
        "tr",
        { dataset: { userId: u.user_id }, class: u.disabled_at ? "is-disabled" : "" },
        h("td", null, h("button", { type: "button", class: "link", onclick: () => this.openUser(u.user_id) }, u.username)),
        h("td", null, u.display_name),
        h("td", { class: "mono" }, u.user_id),
        h("td", null, u.disabled_at ? t("disabled") : t("active"), u.admin ? t(" · admin") : ""),
        h("td", null, when(u.created_at)),
      ),
    );
    this.fill(
      search,
      rows.length
        ? table(t("Users"), [t("Username"), t("Display name"), t("Id"), t("State"), t("Created")], trs)
        : h("p", { class: "list-empty" }, q ? t("No user matches “{q}”.", { q }) : t("No users.")),
      next ? h("button", { type: "button", class: "ghost", onclick: () => this.loadUsers(q, true) }, t("More users")) : null,
      this.detail ? this.userDetailEl(this.detail) : null,
    );
  }

  async openUser(userId) {
    try {
      this.detail = await this.call("GET", `/users/${userId}`);
      this.renderUsers();
      this.body.querySelector(".admin-detail")?.scrollIntoView({ block: "nearest" });
    } catch (err) {
      toast(errorText(err));
    }
  }

  // After a change: the detail and its row in the table show the server's state.
  async refreshUser(user) {
    const i = this.users.rows.findIndex((u) => u.user_id === user.user_id);
    if (i >= 0) this.users.rows[i] = user;
    await this.openUser(user.user_id);
  }

  // Erasing cannot be undone: the dialog names the user and asks for the username typed
  // again (docs/protocol.md §19.8 says what goes and what stays).
  eraseButton(u, label) {
    const open = () => {
      const typed = h("input", { name: "confirm_username", required: true, autocomplete: "off", spellcheck: "false" });
      actionDialog({
        title: t("Erase {label}?", { label }),
        text: t(
          "{username} is signed out everywhere and can never log in or be found again. The profile is blanked, the messages are cleared in everyone's history, the groups are left (owned ones handed on) and files no one else has are deleted. This cannot be undone.",
          { username: u.username },
        ),
        content: [field(t("Type {username} to confirm", { username: u.username }), typed)],
        confirmLabel: t("Erase"),
        danger: true,
        run: async (reason) => {
          if (typed.value.trim().toLowerCase() !== u.username.toLowerCase()) {
            throw new Error(t("Type the username exactly to confirm."));
          }
          await this.call("POST", `/users/${u.user_id}/erase`, { body: { reason } });
          this.users.rows = this.users.rows.filter((x) => x.user_id !== u.user_id);
          this.detail = null;
          this.renderUsers();
          return t("{username} is erased.", { username: u.username });
        },
      });
    };
    return h("button", { type: "button", class: "ghost danger", onclick: open }, t("Erase…"));
  }

  userDetailEl(d) {
    const u = d.user;
    const self = u.user_id === this.store.me.user_id;
    const label = `${u.display_name} (@${u.username})`;
    const refresh = () => this.openUser(u.user_id);
    const actions = [];
    if (!self && !u.disabled_at) {
      actions.push(
        h(
          "button",
          {
            type: "button",
            class: "primary small danger",
            onclick: () =>
              actionDialog({
                title: t("Disable {label}?", { label }),
                text: t(
                  "{username} is signed out everywhere at once and cannot log in until an admin enables the account. Messages, groups and friends stay as they are.",
                  { username: u.username },
                ),
                confirmLabel: t("Disable"),
                danger: true,
                run: async (reason) => {
                  const user = await this.call("POST", `/users/${u.user_id}/disable`, { body: { reason } });
                  await this.refreshUser(user);
                  return t("{username} is disabled.", { username: u.username });
                },
              }),
          },
          t("Disable…"),
        ),
      );
    }
    if (u.disabled_at) {
      actions.push(
        h(
          "button",
          {
            type: "button",
            class: "primary small",
            onclick: () =>
              actionDialog({
                title: t("Enable {label}?", { label }),
                text: t("{username} can log in again.", { username: u.username }),
                confirmLabel: t("Enable"),
                run: async (reason) => {
                  const user = await this.call("POST", `/users/${u.user_id}/enable`, { body: { reason } });
                  await this.refreshUser(user);
                  return t("{username} is enabled.", { username: u.username });
                },
              }),
          },
          t("Enable…"),
        ),
      );
    }
    if (!self) actions.push(this.eraseButton(u, label));
    const newPassword = () =>
      h("input", {
        type: "text",
        name: "new_password",
        required: true,
        minlength: 8,
        maxlength: 256,
        autocomplete: "off",
        spellcheck: "false",
      });
    actions.push(
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          onclick: () => {
            const pw = newPassword();
            actionDialog({
              title: t("Reset the password of {label}", { label }),
              text: t(
                "Type the new password and give it to {username} yourself: it is not shown again. Every session of {username} is signed out.",
                { username: u.username },
              ),
              content: [field(t("New password"), pw)],
              confirmLabel: t("Reset password"),
              danger: true,
              run: async (reason) => {
                const { revoked } = await this.call("POST", `/users/${u.user_id}/password`, {
                  body: { password: pw.value, reason },
                });
                await refresh();
                return t("Password reset; {n} session(s) signed out.", { n: revoked });
              },
            });
          },
        },
        t("Reset password…"),
      ),
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          disabled: !d.devices.length,
          onclick: () =>
            actionDialog({
              title: t("Sign {label} out everywhere?", { label }),
              text: self
                ? t("Every device of yours is signed out, this browser too: you log in again afterwards.")
                : t("Every device of {username} is signed out; the account stays usable.", { username: u.username }),
              confirmLabel: t("Sign out all"),
              danger: true,
              run: async (reason) => {
                const { revoked } = await this.call("DELETE", `/users/${u.user_id}/devices`, { body: { reason } });
                await refresh();
                return t("{n} session(s) signed out.", { n: revoked });
              },
            }),
        },
        t("Sign out all devices…"),
      ),
    );
    actions.push(
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          onclick: () =>
            actionDialog({
              title: t("Export the data of {label}?", { label }),
              text: t(
                "A zip file with everything {username} can see: profile, devices, friends, groups, messages and their files. The export is kept in the audit log. Hand it only to the account's owner, or as the law requires.",
                { username: u.username },
              ),
              confirmLabel: t("Export"),
              run: async (reason) => {
                const q = reason ? "?" + new URLSearchParams({ reason }) : "";
                try {
                  const name = await downloadArchive(this.api, `/api/v1/admin/users/${u.user_id}/export${q}`);
                  return t("Saved {name}.", { name });
                } catch (err) {
                  if (err.code === "forbidden") this.onForbidden();
                  if (err.code === "export_busy") {
                    throw new Error(t("The server is building other exports right now. Try again in a minute."));
                  }
                  throw err;
                }
              },
            }),
        },
        t("Export data…"),
      ),
    );
    if (!self) {
      const grant = !u.admin;
      actions.push(
        h(
          "button",
          {
            type: "button",
            class: "ghost",
            onclick: () =>
              actionDialog({
                title: grant
                  ? t("Make {label} a server admin?", { label })
                  : t("Take the admin role from {label}?", { label }),
                text: grant
                  ? t("{username} will be able to do everything on this page.", { username: u.username })
                  : t("{username} can no longer administer the server.", { username: u.username }),
                confirmLabel: grant ? t("Make admin") : t("Remove admin"),
                danger: !grant,
                run: async (reason) => {
                  const user = await this.call("PUT", `/users/${u.user_id}/role`, { body: { admin: grant, reason } });
                  await this.refreshUser(user);
                  return grant
                    ? t("{username} is a server admin.", { username: u.username })
                    : t("{username} is no longer an admin.", { username: u.username });
                },
              }),
          },
          grant ? t("Make admin…") : t("Remove admin…"),
        ),
      );
    }
    const devices = d.devices.map((dev) =>
      h(
        "li",
        { class: "admin-device" },
        h(
          "span",
          null,
          `${dev.name || dev.device_id} · ${dev.platform} · ` + t("last seen {when}", { when: when(dev.last_seen_at) }),
        ),
        h(
          "button",
          {
            type: "button",
            class: "ghost small",
            "aria-label": t("Sign out device {id}", { id: dev.device_id }),
            onclick: () =>
              actionDialog({
                title: t("Sign out {name}?", { name: dev.name || dev.device_id }),
                confirmLabel: t("Sign out"),
                danger: true,
                run: async (reason) => {
                  const path = `/users/${u.user_id}/devices/${encodeURIComponent(dev.device_id)}`;
                  const { revoked } = await this.call("DELETE", path, { body: { reason } });
                  await refresh();
                  return revoked ? t("The device is signed out.") : t("That device had no live session.");
                },
              }),
          },
          t("Sign out"),
        ),
      ),
    );
    const c = d.counts;
    return h(
      "section",
      { class: "admin-detail", "aria-label": t("User {username}", { username: u.username }) },
      h("h3", null, label),
      h(
        "p",
        { class: "admin-state", dataset: { state: u.disabled_at ? "disabled" : "active" } },
        u.disabled_at ? t("Disabled since {when}", { when: when(u.disabled_at) }) : t("Active"),
        u.admin ? t(" · server admin") : "",
      ),
      h(
        "p",
        { class: "page-note" },
        t("Id {id} · created {when} · {messages} messages sent · ", {
          id: u.user_id,
          when: when(u.created_at),
          messages: d.message_count,
        }) +
          t("{friends} friends, {followers} followers, following {following}", {
            friends: c.friends,
            followers: c.followers,
            following: c.following,
          }),
      ),
      h("div", { class: "admin-actions" }, actions),
      h("h4", null, t("Signed-in devices ({n})", { n: d.devices.length })),
      d.devices.length ? h("ul", { class: "admin-list" }, devices) : h("p", { class: "page-note" }, t("None.")),
      h("h4", null, t("Groups ({n})", { n: d.groups.length })),
      d.groups.length
        ? h(
            "ul",
            { class: "admin-list" },
            d.groups.map((g) => h("li", null, t("{name} · {role} · id {id}", { name: g.name, role: groupRole(g.role), id: g.conv_id }))),
          )
        : h("p", { class: "page-note" }, t("None.")),
    );
  }

  // --- groups -----------------------------------------------------------------------------
  async loadGroups(q, more = false) {
    try {
      const page = await this.call("GET", "/groups", { query: { q, limit: PAGE, after: more ? this.groups.next : null } });
      this.groups = { q, rows: more ? [...this.groups.rows, ...page.groups] : page.groups, next: page.next_after };
      await this.learnNames(page.groups.map((g) => g.owner_id));
      this.renderGroups();
    } catch (err) {
      this.failed(err);
    }
  }

  renderGroups() {
    const { q, rows, next } = this.groups;
    const search = searchForm(t("Search groups"), t("Group name or id"), (text) => this.loadGroups(text));
    search.querySelector("input").value = q;
    const trs = rows.map((g) =>
      h(
        "tr",
        { dataset: { convId: g.conv_id }, class: g.dissolved ? "is-disabled" : "" },
        h("td", null, g.name),
        h("td", { class: "mono" }, g.conv_id),
        h("td", null, this.nameOf(g.owner_id)),
        h("td", null, g.dissolved ? t("dissolved") : String(g.member_count)),
        h(
          "td",
          null,
          g.dissolved
            ? null
            : [
                h(
                  "button",
                  { type: "button", class: "ghost small", onclick: () => this.transferGroup(g) },
                  t("Transfer…"),
                ),
                h(
                  "button",
                  { type: "button", class: "ghost small danger-text", onclick: () => this.dissolveGroup(g) },
                  t("Dissolve…"),
                ),
              ],
        ),
      ),
    );
    this.fill(
      search,
      rows.length
        ? table(t("Groups"), [t("Name"), t("Id"), t("Owner"), t("Members"), t("Actions")], trs)
        : h("p", { class: "list-empty" }, q ? t("No group matches “{q}”.", { q }) : t("No groups.")),
      next ? h("button", { type: "button", class: "ghost", onclick: () => this.loadGroups(q, true) }, t("More groups")) : null,
    );
  }

  replaceGroup(group) {
    const i = this.groups.rows.findIndex((g) => g.conv_id === group.conv_id);
    if (i >= 0) this.groups.rows[i] = group;
    this.renderGroups();
  }

  transferGroup(g) {
    const username = h("input", { name: "new_owner", required: true, maxlength: 32, autocomplete: "off" });
    actionDialog({
      title: t("Transfer “{name}”", { name: g.name }),
      text: t("The new owner must be a member of the group; the old owner stays on as a group admin."),
      content: [field(t("New owner's username"), username)],
      confirmLabel: t("Transfer"),
      run: async (reason) => {
        const user = await this.userNamed(username.value.trim());
        const { group } = await this.call("PUT", `/groups/${g.conv_id}/owner`, { body: { user_id: user.user_id, reason } });
        this.names.set(user.user_id, user.username);
        this.replaceGroup(group);
        return t("{username} owns “{name}” now.", { username: user.username, name: g.name });
      },
    });
  }

  dissolveGroup(g) {
    actionDialog({
      title: t("Dissolve “{name}”?", { name: g.name }),
      text: tn(
        "All {n} members leave the group and nobody can write in it again. This cannot be undone.",
        "All {n} members leave the group and nobody can write in it again. This cannot be undone.",
        g.member_count,
      ),
      confirmLabel: t("Dissolve"),
      danger: true,
      run: async (reason) => {
        const { group } = await this.call("DELETE", `/groups/${g.conv_id}`, { body: { reason } });
        this.replaceGroup(group);
        return t("“{name}” is dissolved.", { name: g.name });
      },
    });
  }

  // --- shops ------------------------------------------------------------------------------
  renderShops() {
    const owner = h("input", { name: "owner", required: true, maxlength: 32, autocomplete: "off" });
    const name = h("input", { name: "shop_name", required: true, maxlength: 64, autocomplete: "off" });
    const createReason = reasonInput();
    const created = h("p", { class: "form-status", role: "status" });
    const createError = h("p", { class: "form-error", role: "alert" });
    const shopId = h("input", { name: "shop_id", required: true, inputmode: "numeric", pattern: "[0-9]{1,20}" });
    const agent = h("input", { name: "agent", required: true, maxlength: 32, autocomplete: "off" });
    const role = h(
      "select",
      { class: "select", name: "role", "aria-label": t("Role") },
      h("option", { value: "agent" }, t("agent")),
      h("option", { value: "admin" }, t("admin")),
    );
    const capacity = h("input", { type: "number", name: "capacity", min: 0, max: 1000, value: "10" });
    const agentReason = reasonInput();
    const setDone = h("p", { class: "form-status", role: "status" });
    const setError = h("p", { class: "form-error", role: "alert" });
    const submit = (status, error, run) => async (e) => {
      e.preventDefault();
      status.textContent = error.textContent = "";
      try {
        status.textContent = await run();
      } catch (err) {
        error.textContent = errorText(err);
      }
    };
    this.fill(
      h(
        "form",
        {
          class: "page-form",
          "aria-label": t("Open a shop for a user"),
          onsubmit: submit(created, createError, async () => {
            const user = await this.userNamed(owner.value.trim());
            const shop = await this.call("POST", "/shops", {
              body: { owner_id: user.user_id, name: name.value.trim(), reason: createReason.value.trim() },
            });
            shopId.value = shop.shop_id;
            return t("Shop “{name}” (id {id}) is open; {username} runs it.", {
              name: shop.name,
              id: shop.shop_id,
              username: user.username,
            });
          }),
        },
        h("h3", null, t("Open a shop for a user")),
        field(t("Owner's username"), owner),
        field(t("Shop name"), name),
        field(t("Reason"), createReason),
        h("div", { class: "page-form-actions" }, h("button", { type: "submit", class: "primary small" }, t("Open shop"))),
        created,
        createError,
      ),
      h(
        "form",
        {
          class: "page-form",
          "aria-label": t("Set a shop's agent"),
          onsubmit: submit(setDone, setError, async () => {
            const user = await this.userNamed(agent.value.trim());
            const a = await this.call("PUT", `/shops/${shopId.value.trim()}/agents/${user.user_id}`, {
              body: { role: role.value, capacity: Number(capacity.value), reason: agentReason.value.trim() },
            });
            const fill = { username: user.username, id: a.shop_id, capacity: a.capacity };
            return a.role === "admin"
              ? t("{username} is an admin of shop {id} (capacity {capacity}).", fill)
              : t("{username} is an agent of shop {id} (capacity {capacity}).", fill);
          }),
        },
        h("h3", null, t("Set a shop's agent")),
        h("p", { class: "page-note" }, t("Adds the agent, or changes the role and capacity of one already there.")),
        field(t("Shop id"), shopId),
        field(t("Agent's username"), agent),
        field(t("Role"), role),
        field(t("Capacity (customers at once)"), capacity),
        field(t("Reason"), agentReason),
        h("div", { class: "page-form-actions" }, h("button", { type: "submit", class: "primary small" }, t("Set agent"))),
        setDone,
        setError,
      ),
    );
  }

  // --- audit log --------------------------------------------------------------------------
  async loadAudit(more = false) {
    try {
      const page = await this.call("GET", "/audit", { query: { limit: PAGE, before: more ? this.audit.next : null } });
      this.audit = { rows: more ? [...this.audit.rows, ...page.entries] : page.entries, next: page.next_before };
      await this.learnNames(page.entries.map((e) => e.actor_id));
      this.renderAudit();
    } catch (err) {
      this.failed(err);
    }
  }

  renderAudit() {
    const { rows, next } = this.audit;
    const trs = rows.map((e) =>
      h(
        "tr",
        { dataset: { entryId: e.id } },
        h("td", null, when(e.at)),
        h("td", null, e.actor_id == null ? t("operator (host)") : this.nameOf(e.actor_id)),
        h("td", null, e.action),
        h("td", { class: "mono" }, e.target),
        h("td", null, Object.entries(e.detail).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ")),
        h("td", null, e.source),
      ),
    );
    this.fill(
      h("div", { class: "page-form-actions" }, h("button", { type: "button", class: "ghost", onclick: () => this.loadAudit() }, t("Refresh"))),
      rows.length
        ? table(t("Audit log"), [t("When"), t("Admin"), t("Action"), t("Target"), t("Detail"), t("Source")], trs)
        : h("p", { class: "list-empty" }, t("No admin action yet.")),
      next ? h("button", { type: "button", class: "ghost", onclick: () => this.loadAudit(true) }, t("Older entries")) : null,
    );
  }

  // --- names --------------------------------------------------------------------------------
  async userNamed(username) {
    if (!username) throw new Error(t("Enter a username."));
    try {
      return await this.api.userByName(username);
    } catch (err) {
      if (err.code === "not_found") throw new Error(t("No user named “{name}”.", { name: username }));
      throw err;
    }
  }

  nameOf(userId) {
    return this.names.get(userId) ?? userId;
  }

  // Usernames for ids shown in a table (a missing one shows as its id).
  async learnNames(ids) {
    const missing = [...new Set(ids)].filter((id) => id != null && !this.names.has(id));
    await Promise.all(
      missing.map((id) =>
        this.api.user(id).then(
          (u) => this.names.set(id, u.username),
          () => this.names.set(id, id),
        ),
      ),
    );
  }
}
