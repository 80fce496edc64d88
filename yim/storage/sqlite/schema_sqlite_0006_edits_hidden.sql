-- Edits (docs/protocol.md "Edit"): the text a message had before each edit of it, oldest
-- first (version 1 is what was sent). The message row holds the latest text; a recall
-- deletes the versions with the text.
CREATE TABLE message_versions (
    conv_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,  -- when this version was written (the send, or the edit before)
    PRIMARY KEY (conv_id, seq, version)
) WITHOUT ROWID;

-- Delete for me (docs/protocol.md "hide"): entries a user hid from their own devices.
-- History, sync and search of that user leave them out; unread does not count them.
CREATE TABLE hidden_messages (
    user_id INTEGER NOT NULL,
    conv_id INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (user_id, conv_id, seq)
) WITHOUT ROWID;
