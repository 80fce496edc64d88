// What the page says when the server refuses a request: one text per error code
// (yim/protocol/errors.py), in the page's language. A view may name a context where a code
// means something more specific there (`forbidden` in the admin tab is about the admin
// role). A code this table does not know shows the server's own (English) message; so does
// `bad_request`, whose message names the field at fault, which no fixed text could.
import { t } from "./i18n.js";

const GENERAL = {
  invalid_username: t("That username is not allowed."),
  weak_password: t("That password is too weak."),
  unauthorized: t("Wrong username or password."),
  forbidden: t("You are not allowed to do this."),
  account_disabled: t("This account is disabled. Ask a server administrator to enable it again."),
  wrong_password: t("The current password is not right. Nothing was changed."),
  not_member: t("You are not in this conversation."),
  not_found: t("Not found. It may have been removed."),
  username_taken: t("That username is taken. Pick another one."),
  muted: t("You are muted in this group."),
  recall_expired: t("Too late to recall this message."),
  already_recalled: t("This message was already recalled."),
  edit_window_passed: t("Too late to edit this message."),
  group_full: t("The group is full."),
  too_many_reactions: t("You already reacted with as many emoji as allowed."),
  too_many_pins: t("This chat has as many pinned messages as allowed. Unpin one first."),
  group_dissolved: t("The group was dissolved."),
  blocked: t("You can't: one of you blocked the other."),
  friends_only: t("This person accepts messages from friends only."),
  already_friends: t("You are already friends."),
  media_too_large: t("The file is too large."),
  media_type_mismatch: t("The file's content does not match its name."),
  media_type_not_allowed: t("This type of file cannot be sent."),
  invalid_media: t("The file is empty or damaged."),
  media_not_found: t("The file is no longer available."),
  content_blocked: t("That text contains a word that is not allowed here."),
  rejected_by_policy: t("The server's policy refused this message."),
  rate_limited: t("Slow down a little."),
  unavailable: t("The server is busy. Try again shortly."),
  internal: t("Something went wrong on the server. Try again."),
  network: t("Cannot reach the server. Check your connection."),
  timeout: t("The server did not answer in time. Try again in a moment."),
  disconnected: t("The connection was lost. Try again when it is back."),
};

// Codes that mean something more specific in one place of the page.
const CONTEXTS = {
  admin: {
    forbidden: t("Only server admins can do this. Your admin role may have been taken back."),
    group_dissolved: t("That group is already dissolved."),
  },
  avatar: {
    media_too_large: t("That picture is too large. Choose a smaller one."),
    media_type_mismatch: t("That file is not a picture. Choose a JPEG, PNG, GIF, WebP or AVIF image."),
    media_type_not_allowed: t("That kind of picture is not accepted. Choose a JPEG, PNG, GIF, WebP or AVIF image."),
    invalid_media: t("That picture cannot be read. Choose another one."),
    media_kind_mismatch: t("That file is not a picture. Choose a JPEG, PNG, GIF, WebP or AVIF image."),
  },
  agents: {
    content_blocked: t("That name is not allowed here. Choose another one."),
    forbidden: t("Only the shop's admins can change its agents."),
  },
  invite: {
    forbidden: t("Only the group's admins can add people."),
  },
  pins: {
    forbidden: t("Only the group owner and admins may pin messages here."),
  },
  send: {
    blocked: t("Not sent: this person doesn't accept your messages."),
    friends_only: t("Not sent: this person accepts messages from friends only."),
    muted: t("Not sent: you are muted in this group."),
    not_member: t("Not sent: you are not in this conversation."),
    group_dissolved: t("Not sent: the group was dissolved."),
  },
};

// The text for a failed request `err` ({code, message}); `context` names a CONTEXTS entry.
export function errorText(err, context = null) {
  const code = err?.code;
  return (
    CONTEXTS[context]?.[code] ?? GENERAL[code] ?? err?.message ?? err?.error ?? t("Something went wrong. Try again.")
  );
}
