-- yim embedded schema (SQLite, WAL): migration 1, the baseline, together with the concept
-- files schema_sqlite_<concept>.sql. Released, so frozen: a schema change is a new file
-- schema_sqlite_NNNN_<name>.sql (yim/storage/migrations.py); PRAGMA user_version holds the
-- number of the last migration applied.
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
    type        TEXT    NOT NULL,               -- 'direct' | 'group'
    created_at  INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,     -- head of the conversation timeline
    last_msg_id INTEGER NOT NULL,               -- orders conversation lists (time-ordered id)
    updated_at  INTEGER NOT NULL,
    -- groups only
    name            TEXT    NOT NULL DEFAULT '',
    avatar          TEXT    NOT NULL DEFAULT '',    -- media id
    announcement    TEXT    NOT NULL DEFAULT '',
    owner_id        INTEGER,
    join_policy     TEXT    NOT NULL DEFAULT 'members_invite',
    mute_all        INTEGER NOT NULL DEFAULT 0,
    max_members     INTEGER NOT NULL DEFAULT 0,
    member_count    INTEGER NOT NULL DEFAULT 0,
    fanout          TEXT    NOT NULL DEFAULT 'write', -- 'write' | 'read'
    switch_seq      INTEGER NOT NULL DEFAULT 0,     -- last seq written to inboxes before 'read'
    mention_all_seq INTEGER NOT NULL DEFAULT 0,     -- last seq that mentioned everyone
    dissolved       INTEGER NOT NULL DEFAULT 0
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
    left_seq   INTEGER,                         -- NULL while a member; else sees seq <= left_seq
    role       TEXT    NOT NULL DEFAULT 'member', -- 'owner' | 'admin' | 'member'
    muted_until INTEGER NOT NULL DEFAULT 0,     -- ms; may not speak before
    mention_seq INTEGER NOT NULL DEFAULT 0,     -- last seq that mentioned this member
    PRIMARY KEY (user_id, conv_id)
) WITHOUT ROWID;
-- Current members of a conversation: WHERE conv_id=? AND left_seq IS NULL.
CREATE INDEX IF NOT EXISTS user_conversations_conv ON user_conversations (conv_id, left_seq, user_id);

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
    -- 1 for entries that never count as unread: system and recall entries, recalled messages
    uncounted        INTEGER NOT NULL DEFAULT 0,
    mentions         TEXT,                      -- JSON list of user ids (strings), or NULL
    mention_all      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, seq)
) WITHOUT ROWID;
-- Unread = last_seq - read_seq - (uncounted entries after read_seq): this partial index
-- makes the correction a scan of the (rare) uncounted rows only.
CREATE INDEX IF NOT EXISTS messages_uncounted ON messages (conv_id, seq) WHERE uncounted = 1;
CREATE UNIQUE INDEX IF NOT EXISTS messages_msg_id ON messages (msg_id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency ON messages (sender_id, client_msg_id);

-- User inbox timelines (write fan-out): what each user's devices sync from.
CREATE TABLE IF NOT EXISTS inbox (
    user_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,                -- 'message' | 'read' | 'receipt' | 'relation'
    conv_id    INTEGER NOT NULL,                -- 0 for events outside conversations
    conv_seq   INTEGER NOT NULL,
    actor_id   INTEGER,                         -- 'receipt': who read; 'relation': the other user
    data       TEXT,                            -- JSON payload of events that carry one
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
