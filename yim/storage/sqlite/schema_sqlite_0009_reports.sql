-- Migration 0009 (SQLite): reports of messages and users, and the admins' queue of them.
CREATE TABLE reports (
    id          INTEGER PRIMARY KEY,            -- a Snowflake: newer reports, larger ids
    reporter_id INTEGER NOT NULL,
    target      TEXT    NOT NULL,               -- "message:<conv_id>:<seq>" or "user:<user_id>"
    user_id     INTEGER NOT NULL,               -- the reported user (a message's sender)
    conv_id     INTEGER,                        -- a reported message: where it is
    seq         INTEGER,
    msg_id      INTEGER,
    category    TEXT    NOT NULL,               -- spam | abuse | illegal | other
    text        TEXT    NOT NULL DEFAULT '',    -- the reporter's words
    snap_kind   TEXT,                           -- the message as it was when reported
    snap_body   TEXT,
    snap_at     INTEGER,
    created_at  INTEGER NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'open', -- open | resolved
    resolved_at INTEGER,
    resolved_by INTEGER,                        -- the admin; NULL: the command line on the store
    resolution  TEXT,                           -- dismiss | recall | disable
    note        TEXT    NOT NULL DEFAULT ''
);
-- One open report per reporter and target: a repeat returns it.
CREATE UNIQUE INDEX reports_open_once ON reports (reporter_id, target) WHERE status = 'open';
-- The reporter's reports of the last hour (the per-user limit).
CREATE INDEX reports_by_reporter ON reports (reporter_id, created_at);
-- The queue, by status, newest first; and a target's open reports, which one resolution closes.
CREATE INDEX reports_queue ON reports (status, id);
CREATE INDEX reports_by_target ON reports (target, status);
