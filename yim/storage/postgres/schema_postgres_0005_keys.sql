-- Migration 0005: keys every node of a cluster must agree on, kept in the shared store so
-- that nodes with separate data folders need no file copied between them.
-- 'token': the HS256 key that signs access tokens (docs/operations.md, "The signing key").
-- The first node to start inserts its candidate (INSERT ... ON CONFLICT DO NOTHING);
-- every node then reads back whichever key won.
CREATE TABLE yim_keys (
    name       text        PRIMARY KEY,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
