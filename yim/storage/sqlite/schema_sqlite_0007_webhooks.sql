-- Migration 0005 (SQLite): the webhook outbox (yim/storage/outbox.py, docs/operations.md §9).
-- One row per (event, hook URL) still to deliver; a delivered event's row is deleted, one that
-- failed every attempt stays with dead_at set (a dead letter) until an operator clears it.
CREATE TABLE webhook_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url         TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    event_id    INTEGER NOT NULL,
    payload     BLOB    NOT NULL,                -- the request body, JSON, as signed and sent
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,                -- ms: due from then (a claim pushes it out: the lease)
    dead_at     INTEGER,                         -- ms: set once the last attempt failed
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE dead_at IS NULL;
