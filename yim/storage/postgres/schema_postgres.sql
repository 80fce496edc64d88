-- yim cluster schema (PostgreSQL 15), migration 0001: the core tables.
--
-- Applied once per database by `yim admin migrate` or on node start (recorded in
-- yim_migrations). Never edit a released migration: add a new schema_postgres_NNNN_*.sql.
--
-- Every hot table leads its primary key with its distribution key, so each hot query is
-- a range of one key and each table maps onto a Citus distributed table
-- (docs/architecture.md, "PostgreSQL at scale"):
--   conv_id : conversations, messages                 (the conversation timeline)
--   user_id : users, inbox, user_conversations, devices, sessions, client_msg_ids
--             (the user's inbox timeline and everything read for one user)

CREATE TABLE users (
    id            bigint PRIMARY KEY,           -- Snowflake; distribution key
    username      text   NOT NULL,
    display_name  text   NOT NULL DEFAULT '',
    password_hash text   NOT NULL,
    created_at    bigint NOT NULL,
    inbox_seq     bigint NOT NULL DEFAULT 0      -- head of the user's inbox timeline
);

-- Case-insensitive unique usernames (ASCII case folding, like SQLite's NOCASE), in their
-- own table keyed by the folded name: on Citus a unique key must contain the table's
-- distribution column, so uniqueness of names cannot live on `users`.
CREATE TABLE usernames (
    username_key text   PRIMARY KEY,
    user_id      bigint NOT NULL
);

CREATE TABLE devices (
    user_id      bigint NOT NULL,
    device_id    text   NOT NULL,
    platform     text   NOT NULL,
    name         text   NOT NULL DEFAULT '',
    created_at   bigint NOT NULL,
    last_seen_at bigint NOT NULL,
    acked_seq    bigint NOT NULL DEFAULT 0,      -- the device's delivery cursor (last `ack`)
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE sessions (
    user_id    bigint NOT NULL,
    id         text   NOT NULL,                 -- random, carried in the token as `sid`
    device_id  text   NOT NULL,
    platform   text   NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint,
    PRIMARY KEY (user_id, id)
);
-- Lookup by session id alone (not unique on Citus: 144 random bits do not collide).
CREATE INDEX sessions_id ON sessions (id);
CREATE INDEX sessions_device ON sessions (user_id, device_id) WHERE revoked_at IS NULL;

CREATE TABLE conversations (
    id              bigint  PRIMARY KEY,        -- Snowflake; distribution key (conv_id)
    type            text    NOT NULL,           -- 'direct' | 'group'
    created_at      bigint  NOT NULL,
    last_seq        bigint  NOT NULL DEFAULT 0, -- head of the conversation timeline
    last_msg_id     bigint  NOT NULL,           -- orders conversation lists
    updated_at      bigint  NOT NULL,
    name            text    NOT NULL DEFAULT '',
    avatar          text    NOT NULL DEFAULT '',
    announcement    text    NOT NULL DEFAULT '',
    owner_id        bigint,
    join_policy     text    NOT NULL DEFAULT 'members_invite',
    mute_all        boolean NOT NULL DEFAULT false,
    max_members     integer NOT NULL DEFAULT 0,
    member_count    integer NOT NULL DEFAULT 0,
    fanout          text    NOT NULL DEFAULT 'write', -- 'write' | 'read'
    switch_seq      bigint  NOT NULL DEFAULT 0,
    mention_all_seq bigint  NOT NULL DEFAULT 0,
    dissolved       boolean NOT NULL DEFAULT false
);

-- A user pair -> its direct conversation (the mapping table of the mission).
CREATE TABLE direct_pairs (
    user_lo bigint NOT NULL,
    user_hi bigint NOT NULL,
    conv_id bigint NOT NULL,
    PRIMARY KEY (user_lo, user_hi)
);

-- A user's membership in a conversation and their read marker.
CREATE TABLE user_conversations (
    user_id     bigint  NOT NULL,
    conv_id     bigint  NOT NULL,
    peer_id     bigint,
    joined_seq  bigint  NOT NULL DEFAULT 0,
    read_seq    bigint  NOT NULL DEFAULT 0,
    left_seq    bigint,
    role        text    NOT NULL DEFAULT 'member',
    muted_until bigint  NOT NULL DEFAULT 0,
    mention_seq bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
);
-- Members of a conversation (current ones: AND left_seq IS NULL), ordered by user.
CREATE INDEX user_conversations_conv ON user_conversations (conv_id, user_id);

-- Conversation timelines: one row per entry.
CREATE TABLE messages (
    conv_id          bigint  NOT NULL,
    seq              bigint  NOT NULL,
    msg_id           bigint  NOT NULL,
    sender_id        bigint  NOT NULL,
    sender_device    text    NOT NULL,
    kind             text    NOT NULL,
    body             text    NOT NULL,          -- canonical JSON, kept byte for byte
    client_msg_id    text    NOT NULL,
    sender_inbox_seq bigint  NOT NULL,
    created_at       bigint  NOT NULL,
    recalled         boolean NOT NULL DEFAULT false,
    uncounted        boolean NOT NULL DEFAULT false, -- never unread: system, recall, recalled
    mentions         bigint[],
    mention_all      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (conv_id, seq)
);
CREATE INDEX messages_uncounted ON messages (conv_id, seq) WHERE uncounted;
CREATE INDEX messages_msg_id ON messages (msg_id);

-- Idempotency of sends: (sender, client_msg_id) -> the entry it produced. Its own table
-- keyed by the sender (a unique index on messages would have to contain conv_id on Citus).
CREATE TABLE client_msg_ids (
    sender_id     bigint NOT NULL,
    client_msg_id text   NOT NULL,
    conv_id       bigint NOT NULL,
    seq           bigint NOT NULL,
    PRIMARY KEY (sender_id, client_msg_id)
);

-- User inbox timelines (write fan-out): what each user's devices sync from.
CREATE TABLE inbox (
    user_id    bigint NOT NULL,
    seq        bigint NOT NULL,
    type       text   NOT NULL,                 -- 'message' | 'read' | 'receipt' | 'relation'
    conv_id    bigint NOT NULL,                 -- 0 for events outside conversations
    conv_seq   bigint NOT NULL,
    actor_id   bigint,
    data       text,                            -- JSON payload of events that carry one
    created_at bigint NOT NULL,
    PRIMARY KEY (user_id, seq)
);
