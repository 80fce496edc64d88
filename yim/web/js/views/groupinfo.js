// A group's info: its announcement, the members with their roles, inviting people by
// username, which of its messages notify me, and leaving. Kept current while open (member
// changes reload the list).
import { h } from "../dom.js";
import { avatar, displayName } from "../format.js";
import { openDialog } from "./dialog.js";
import { errorText } from "../errors.js";
import { t, tn } from "../i18n.js";
import { MUTES, muteLabel } from "../pushprefs.js";

const ROLE_LABEL = { owner: t("Owner"), admin: t("Admin"), member: "" };
const ROLE_ORDER = { owner: 0, admin: 1, member: 2 };
const SHOWN = 200; // members listed (each name is one lookup)

export function openGroupInfo({ store, groups, pushPrefs = null }, convId) {
  const conv = store.convs.get(convId);
  const list = h("ul", { class: "people members", "aria-label": t("Members") });
  const summary = h("p", { class: "dialog-note" });
  const invite = h("input", {
    name: "invite",
    placeholder: t("Usernames to add"),
    "aria-label": t("Usernames to add"),
    autocomplete: "off",
    spellcheck: "false",
  });
  const inviteError = h("p", { class: "form-error", role: "alert" });
  const inviteBtn = h("button", { type: "button", class: "primary small" }, t("Add"));
  const leaveBtn = h("button", { type: "button", class: "ghost danger-text" }, t("Leave group"));
  const me = store.me.user_id;
  const muteSelect = pushPrefs
    ? h(
        "select",
        { name: "push_mute", class: "mute-select" },
        MUTES.map((m) => h("option", { value: m }, muteLabel(m))),
      )
    : null;

  const render = () => {
    const entry = groups.get(convId);
    const g = entry?.group;
    const members = groups
      .members(convId)
      .sort((a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || a.joined_seq - b.joined_seq);
    summary.textContent = g
      ? [g.announcement, tn("{n} member", "{n} members", g.member_count)].filter(Boolean).join(" · ")
      : t("Loading…");
    const more = members.length - SHOWN;
    list.replaceChildren(
      ...members.slice(0, SHOWN).map((m) => {
        const u = store.user(m.user_id) ?? { user_id: m.user_id };
        return h(
          "li",
          { class: "person", dataset: { userId: m.user_id, role: m.role } },
          h(
            "span",
            { class: "person-main" },
            avatar(u, "sm"),
            h(
              "span",
              { class: "person-text" },
              h(
                "span",
                { class: "person-name" },
                m.user_id === me ? t("{name} (you)", { name: displayName(u) }) : displayName(u),
              ),
              u.username ? h("span", { class: "person-sub" }, "@" + u.username) : null,
            ),
          ),
          ROLE_LABEL[m.role] ? h("span", { class: "role-badge" }, ROLE_LABEL[m.role]) : null,
        );
      }),
    );
    if (more > 0) list.append(h("li", { class: "list-note" }, t("and {n} more", { n: more })));
    const active = store.convs.get(convId)?.active !== false && !g?.dissolved;
    leaveBtn.hidden = !active || g?.owner_id === me;
    invite.disabled = inviteBtn.disabled = !active;
    if (muteSelect) {
      muteSelect.value = pushPrefs.mode(convId);
      muteSelect.disabled = !active;
    }
  };

  inviteBtn.addEventListener("click", async () => {
    inviteError.textContent = "";
    inviteBtn.disabled = true;
    try {
      await groups.invite(convId, invite.value);
      invite.value = "";
    } catch (err) {
      inviteError.textContent = errorText(err, "invite");
    } finally {
      inviteBtn.disabled = false;
    }
  });
  invite.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      inviteBtn.click();
    }
  });

  const dlg = openDialog({
    title: conv?.name || t("Group"),
    content: [
      summary,
      muteSelect ? h("label", { class: "mute-row" }, t("Notifications"), " ", muteSelect) : null,
      h("div", { class: "invite-row" }, invite, inviteBtn),
      inviteError,
      h("h3", { class: "section-title" }, t("Members")),
      list,
      leaveBtn,
    ],
    submitLabel: null,
    cancelLabel: t("Close"),
    wide: true,
  });
  leaveBtn.addEventListener("click", async () => {
    try {
      await groups.leave(convId);
      dlg.close();
    } catch (err) {
      dlg.error.textContent = errorText(err);
    }
  });
  muteSelect?.addEventListener("change", async () => {
    dlg.error.textContent = "";
    try {
      await pushPrefs.setMute(convId, muteSelect.value);
    } catch (err) {
      dlg.error.textContent = errorText(err);
      render(); // back to the mute in force
    }
  });
  const onChange = (e) => {
    if (e.detail === convId) render();
  };
  groups.addEventListener("change", onChange);
  store.addEventListener("change", render); // names fetched meanwhile
  pushPrefs?.addEventListener("change", render);
  dlg.el.addEventListener("close", () => {
    pushPrefs?.removeEventListener("change", render);
    groups.removeEventListener("change", onChange);
    store.removeEventListener("change", render);
  });
  render();
  groups.load(convId, true).catch((err) => (dlg.error.textContent = errorText(err)));
  return dlg;
}
