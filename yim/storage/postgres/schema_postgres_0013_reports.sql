-- Migration 0013 (PostgreSQL): reports of messages and users, and the admins' queue of them.
CREATE TABLE reports (
    id          bigint PRIMARY KEY,              -- a Snowflake: newer reports, larger ids
    reporter_id bigint NOT NULL,
    target      text   NOT NULL,                 -- "message:<conv_id>:<seq>" or "user:<user_id>"
    user_id     bigint NOT NULL,                 -- the reported user (a message's sender)
    conv_id     bigint,                          -- a reported message: where it is
    seq         bigint,
    msg_id      bigint,
    category    text   NOT NULL,                 -- spam | abuse | illegal | other
    text        text   NOT NULL DEFAULT '',      -- the reporter's words
    snap_kind   text,                            -- the message as it was when reported
    snap_body   text,
    snap_at     bigint,
    created_at  bigint NOT NULL,
    status      text   NOT NULL DEFAULT 'open',  -- open | resolved
    resolved_at bigint,
    resolved_by bigint,                          -- the admin; NULL: the command line on the store
    resolution  text,                            -- dismiss | recall | disable
    note        text   NOT NULL DEFAULT ''
);
-- One open report per reporter and target: a repeat returns it.
CREATE UNIQUE INDEX reports_open_once ON reports (reporter_id, target) WHERE status = 'open';
-- The reporter's reports of the last hour (the per-user limit).
CREATE INDEX reports_by_reporter ON reports (reporter_id, created_at);
-- The queue, by status, newest first; and a target's open reports, which one resolution closes.
CREATE INDEX reports_queue ON reports (status, id);
CREATE INDEX reports_by_target ON reports (target, status);
