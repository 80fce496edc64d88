-- Migration 0006: message reactions and pinned messages (docs/protocol.md §6.13, §6.14).
--
-- Reactions are not timeline entries: they never count as unread and never move a
-- conversation in the list. Who reacted with what is one row per (message, emoji, user);
-- the counts every message carries are kept beside it per (message, emoji), so reading a
-- page of history never counts rows. Each change takes the conversation's next reaction
-- version (conversations.reaction_ver) and stamps the message with it (reaction_changes):
-- a device that missed changes in a read-fan-out group asks for the messages changed
-- after the version it holds.
--
-- Lock order (postgres/locks.py): every row here is written only while holding its
-- conversation's row exclusively, like the messages it belongs to.
CREATE TABLE reactions (
    conv_id    bigint NOT NULL,
    seq        bigint NOT NULL,
    emoji      text    NOT NULL,
    user_id    bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (conv_id, seq, emoji, user_id)
);
-- "Did I react" and the per-user limit: a user's reactions to one message.
CREATE INDEX reactions_by_user ON reactions (conv_id, seq, user_id);

CREATE TABLE reaction_counts (
    conv_id bigint NOT NULL,
    seq     bigint NOT NULL,
    emoji   text    NOT NULL,
    count   bigint NOT NULL,
    first_at bigint NOT NULL,            -- when the emoji first appeared: the display order
    PRIMARY KEY (conv_id, seq, emoji)
);

CREATE TABLE reaction_changes (
    conv_id bigint NOT NULL,
    seq     bigint NOT NULL,
    ver     bigint NOT NULL,             -- the conversation's reaction_ver of the last change
    PRIMARY KEY (conv_id, seq)
);
CREATE INDEX reaction_changes_by_ver ON reaction_changes (conv_id, ver);

ALTER TABLE conversations ADD COLUMN reaction_ver bigint NOT NULL DEFAULT 0;

-- Pinned messages of a conversation (at most max_pins); each pin or unpin also appends a
-- "system" entry, so every member sees them in order with the chat.
CREATE TABLE pins (
    conv_id   bigint NOT NULL,
    seq       bigint NOT NULL,
    msg_id    bigint NOT NULL,
    pinned_by bigint NOT NULL,
    pinned_at bigint NOT NULL,
    PRIMARY KEY (conv_id, seq)
);

-- Groups: who may pin ('admins': the owner and admins; 'members': every member).
ALTER TABLE conversations ADD COLUMN pin_policy text NOT NULL DEFAULT 'admins';
