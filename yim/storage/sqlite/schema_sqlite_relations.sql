-- Relation chain (关系链): friends, follows, blocks, privacy. Independent of conversations.
-- Each relation is stored once per direction that is queried, keyed by the user it is
-- read for (the distribution key in the PostgreSQL schema), so every list is one range scan.

CREATE TABLE IF NOT EXISTS friend_requests (
    id         INTEGER PRIMARY KEY,            -- Snowflake
    from_id    INTEGER NOT NULL,
    to_id      INTEGER NOT NULL,
    message    TEXT    NOT NULL DEFAULT '',
    status     TEXT    NOT NULL,               -- 'pending' | 'accepted' | 'rejected' | 'canceled'
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS friend_requests_to ON friend_requests (to_id, status, id);
CREATE INDEX IF NOT EXISTS friend_requests_from ON friend_requests (from_id, status, id);

-- Two-way friendship: one row per direction (user_id's view: remark and tags are theirs).
CREATE TABLE IF NOT EXISTS friends (
    user_id    INTEGER NOT NULL,
    friend_id  INTEGER NOT NULL,
    remark     TEXT    NOT NULL DEFAULT '',
    tags       TEXT    NOT NULL DEFAULT '[]',  -- JSON list of strings
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

-- One-way follow, kept in both directions: who I follow / who follows me.
CREATE TABLE IF NOT EXISTS following (
    user_id    INTEGER NOT NULL,
    target_id  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, target_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS followers (
    user_id     INTEGER NOT NULL,              -- the followed user
    follower_id INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, follower_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS blocks (
    user_id    INTEGER NOT NULL,               -- who blocks
    blocked_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS privacy (
    user_id   INTEGER PRIMARY KEY,
    dm_policy TEXT NOT NULL DEFAULT 'anyone',  -- who may message me: 'anyone' | 'friends'
    presence  TEXT NOT NULL DEFAULT 'friends'  -- who sees my presence: 'friends' | 'nobody'
);
