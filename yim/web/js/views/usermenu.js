// A user's menu (from the friends list or a one-to-one chat's header): message, friend
// requests, remove, block / unblock. Every action goes to the server; the lists follow
// by `relation` events.
import { displayName } from "../format.js";
import { confirmAction } from "./dialog.js";
import { t } from "../i18n.js";
import { openMenu } from "./menu.js";
import { openReportDialog } from "./reports.js";
import { toast } from "./toast.js";

const ERRORS = {
  blocked: "You can't: one of you blocked the other.",
  already_friends: "You are already friends.",
};

export function userMenu({ relations, onOpenUser, inChat = false }, user, at) {
  const id = user.user_id;
  const name = displayName(user);
  const run = (promise, done) =>
    promise.then(
      () => done && toast(done),
      (err) => toast(ERRORS[err.code] ?? err.message),
    );
  const pending = relations.pendingWith(id);
  const items = [];
  if (!inChat) items.push({ label: "Message", onSelect: () => onOpenUser(user) });
  if (relations.isFriend(id)) {
    items.push({ label: "Remove friend", danger: true, onSelect: () => run(relations.remove(id), `${name} removed.`) });
  } else if (pending && pending.from_id === id) {
    items.push({ label: "Accept friend request", onSelect: () => run(relations.accept(pending.request_id)) });
  } else if (pending) {
    items.push({ label: "Cancel friend request", onSelect: () => run(relations.cancel(pending.request_id)) });
  } else if (!relations.isBlocked(id)) {
    items.push({ label: "Add friend", onSelect: () => run(relations.request(id), `Friend request sent to ${name}.`) });
  }
  if (relations.isBlocked(id)) {
    items.push({ label: "Unblock", onSelect: () => run(relations.unblock(id), `${name} unblocked.`) });
  } else {
    items.push({
      label: "Block",
      danger: true,
      onSelect: () =>
        confirmAction({
          title: `Block ${name}?`,
          text:
            `${name} will not be able to message you, send you friend requests or follow you. ` +
            (relations.isFriend(id) ? "Blocking also ends your friendship. " : "") +
            "You can unblock later.",
          confirmLabel: "Block",
          onConfirm: () =>
            relations.block(id).then(
              () => toast(`${name} blocked.`),
              (err) => {
                throw new Error(ERRORS[err.code] ?? err.message);
              },
            ),
        }),
    });
  }
  items.push({
    label: t("Report…"),
    danger: true,
    onSelect: () => openReportDialog(relations.socket, { user_id: id }, t("the user {name}", { name })),
  });
  openMenu(at, items, `Actions for ${name}`);
}
