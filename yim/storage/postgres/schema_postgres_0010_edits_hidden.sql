-- Edits, mirroring schema_sqlite_0003_edits.sql (docs/protocol.md "Edit"): the text a
-- message had before each edit of it, oldest first (version 1 is what was sent). The
-- message row holds the latest text; a recall deletes the versions with the text.
CREATE TABLE message_versions (
    conv_id    bigint NOT NULL,
    seq        bigint NOT NULL,
    version    int NOT NULL,
    body       text NOT NULL,
    created_at bigint NOT NULL,  -- when this version was written (the send, or the edit before)
    PRIMARY KEY (conv_id, seq, version)
);

-- Delete for me, mirroring schema_sqlite_0003_edits.sql: entries a user hid from their own
-- devices. History, sync and search of that user leave them out; unread does not count them.
CREATE TABLE hidden_messages (
    user_id bigint NOT NULL,
    conv_id bigint NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (user_id, conv_id, seq)
);
