-- Migration 0002 (SQLite): server roles, disabled accounts and the audit log.
-- users.is_admin: 1 for a server admin (made by `yim admin create-admin`, or by another admin).
-- users.disabled_at: set while the account is disabled (ms); its sessions are revoked then.
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN disabled_at INTEGER;

-- Every admin action, appended in the transaction of the action itself. Nothing updates or
-- deletes a row: the triggers refuse it, whoever asks.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- the paging cursor: later rows, larger ids
    at        INTEGER NOT NULL,                   -- ms since the epoch
    actor_id  INTEGER,                            -- the admin; NULL: the command line on the store
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL DEFAULT '',        -- "user:<id>", ...
    detail    TEXT    NOT NULL DEFAULT '{}',      -- JSON object
    source    TEXT    NOT NULL DEFAULT ''         -- where from: "http 1.2.3.4", "ws 1.2.3.4", "cli"
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
