// A user's menu (from the friends list or a one-to-one chat's header): message, friend
// requests, remove, block / unblock. Every action goes to the server; the lists follow
// by `relation` events.
import { displayName } from "../format.js";
import { confirmAction } from "./dialog.js";
import { t } from "../i18n.js";
import { openMenu } from "./menu.js";
import { openReportDialog } from "./reports.js";
import { toast } from "./toast.js";
import { errorText } from "../errors.js";

export function userMenu({ relations, onOpenUser, inChat = false }, user, at) {
  const id = user.user_id;
  const name = displayName(user);
  const run = (promise, done) =>
    promise.then(
      () => done && toast(done),
      (err) => toast(errorText(err)),
    );
  const pending = relations.pendingWith(id);
  const items = [];
  if (!inChat) items.push({ label: t("Message"), onSelect: () => onOpenUser(user) });
  if (relations.isFriend(id)) {
    items.push({
      label: t("Remove friend"),
      danger: true,
      onSelect: () => run(relations.remove(id), t("{name} removed.", { name })),
    });
  } else if (pending && pending.from_id === id) {
    items.push({ label: t("Accept friend request"), onSelect: () => run(relations.accept(pending.request_id)) });
  } else if (pending) {
    items.push({ label: t("Cancel friend request"), onSelect: () => run(relations.cancel(pending.request_id)) });
  } else if (!relations.isBlocked(id)) {
    items.push({
      label: t("Add friend"),
      onSelect: () => run(relations.request(id), t("Friend request sent to {who}.", { who: name })),
    });
  }
  if (relations.isBlocked(id)) {
    items.push({ label: t("Unblock"), onSelect: () => run(relations.unblock(id), t("{name} unblocked.", { name })) });
  } else {
    items.push({
      label: t("Block"),
      danger: true,
      onSelect: () =>
        confirmAction({
          title: t("Block {name}?", { name }),
          text:
            t("{name} will not be able to message you, send you friend requests or follow you.", { name }) +
            " " +
            (relations.isFriend(id) ? t("Blocking also ends your friendship.") + " " : "") +
            t("You can unblock later."),
          confirmLabel: t("Block"),
          onConfirm: () =>
            relations.block(id).then(
              () => toast(t("{name} blocked.", { name })),
              (err) => {
                throw new Error(errorText(err));
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
  openMenu(at, items, t("Actions for {name}", { name }));
}
