-- Migration 0002: the relation chain (friends, follows, blocks, privacy), mirroring
-- schema_sqlite_relations.sql. Each relation is stored per direction that is read, keyed
-- by the user it is read for (the distribution key on Citus).

-- Relation chain (关系链): keyed by the user each row is read for.
CREATE TABLE friend_requests (
    id         bigint PRIMARY KEY,
    from_id    bigint NOT NULL,
    to_id      bigint NOT NULL,
    message    text   NOT NULL DEFAULT '',
    status     text   NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX friend_requests_to ON friend_requests (to_id, status, id);
CREATE INDEX friend_requests_from ON friend_requests (from_id, status, id);

CREATE TABLE friends (
    user_id    bigint NOT NULL,
    friend_id  bigint NOT NULL,
    remark     text   NOT NULL DEFAULT '',
    tags       text   NOT NULL DEFAULT '[]',
    created_at bigint NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE following (
    user_id    bigint NOT NULL,
    target_id  bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (user_id, target_id)
);
CREATE TABLE followers (
    user_id     bigint NOT NULL,
    follower_id bigint NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (user_id, follower_id)
);

CREATE TABLE blocks (
    user_id    bigint NOT NULL,
    blocked_id bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);

CREATE TABLE privacy (
    user_id   bigint PRIMARY KEY,
    dm_policy text NOT NULL DEFAULT 'anyone',
    presence  text NOT NULL DEFAULT 'friends'
);
