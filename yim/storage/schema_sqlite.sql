-- yim embedded schema (SQLite, WAL). Version tracked in PRAGMA user_version.
-- Every hot table leads its primary key with its distribution key (conversation id for
-- timelines, user id for inboxes), the same keys the PostgreSQL schema shards on.

CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,          -- Snowflake
    username      TEXT    NOT NULL,
    display_name  TEXT    NOT NULL DEFAULT '',
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    inbox_seq     INTEGER NOT NULL DEFAULT 0     -- head of the user's inbox timeline
);
CREATE UNIQUE INDEX IF NOT EXISTS users_username ON users (username COLLATE NOCASE);

CREATE TABLE IF NOT EXISTS devices (
    user_id      INTEGER NOT NULL,
    device_id    TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    name         TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    acked_seq    INTEGER NOT NULL DEFAULT 0,     -- the device's delivery cursor (last `ack`)
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT    PRIMARY KEY,             -- random, carried in the token as `sid`
    user_id    INTEGER NOT NULL,
    device_id  TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_device ON sessions (user_id, device_id);

CREATE TABLE IF NOT EXISTS conversations (
    id          INTEGER PRIMARY KEY,            -- Snowflake, never derived from member ids
    type        TEXT    NOT NULL,               -- 'direct'
    created_at  INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,     -- head of the conversation timeline
    last_msg_id INTEGER NOT NULL,               -- orders conversation lists (time-ordered id)
    updated_at  INTEGER NOT NULL
);

-- The mapping table of the mission: a user pair -> its direct conversation.
CREATE TABLE IF NOT EXISTS direct_pairs (
    user_lo INTEGER NOT NULL,
    user_hi INTEGER NOT NULL,
    conv_id INTEGER NOT NULL,
    PRIMARY KEY (user_lo, user_hi)
) WITHOUT ROWID;

-- A user's membership in a conversation and their read marker.
CREATE TABLE IF NOT EXISTS user_conversations (
    user_id    INTEGER NOT NULL,
    conv_id    INTEGER NOT NULL,
    peer_id    INTEGER,                         -- the other user of a direct conversation
    joined_seq INTEGER NOT NULL DEFAULT 0,      -- sees messages with seq > joined_seq
    read_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_conversations_conv ON user_conversations (conv_id, user_id);

-- Conversation timelines (read fan-out source of truth): one row per message.
CREATE TABLE IF NOT EXISTS messages (
    conv_id          INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    msg_id           INTEGER NOT NULL,
    sender_id        INTEGER NOT NULL,
    sender_device    TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    body             TEXT    NOT NULL,          -- canonical JSON
    client_msg_id    TEXT    NOT NULL,
    sender_inbox_seq INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    recalled         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_msg_id ON messages (msg_id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency ON messages (sender_id, client_msg_id);

-- User inbox timelines (write fan-out): what each user's devices sync from.
CREATE TABLE IF NOT EXISTS inbox (
    user_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,                -- 'message' | 'read'
    conv_id    INTEGER NOT NULL,
    conv_seq   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
