-- Migration 0009 (PostgreSQL): the webhook outbox (yim/storage/outbox.py, docs/operations.md §9).
-- One row per (event, hook URL) still to deliver; a delivered event's row is deleted, one that
-- failed every attempt stays with dead_at set (a dead letter) until an operator clears it.
-- Nodes claim due rows with FOR UPDATE SKIP LOCKED and push next_at out (a lease), so one
-- node delivers each row at a time.
CREATE TABLE webhook_outbox (
    id          BIGSERIAL PRIMARY KEY,
    url         TEXT     NOT NULL,
    event       TEXT     NOT NULL,
    event_id    BIGINT   NOT NULL,
    payload     BYTEA    NOT NULL,
    attempts    INTEGER  NOT NULL DEFAULT 0,
    next_at     BIGINT   NOT NULL,
    dead_at     BIGINT,
    last_error  TEXT     NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE dead_at IS NULL;
