-- Migration 0006 (PostgreSQL): server roles, disabled accounts and the audit log.
-- users.is_admin: true for a server admin (made by `yim admin create-admin`, or by another admin).
-- users.disabled_at: set while the account is disabled (ms); its sessions are revoked then.
ALTER TABLE users ADD COLUMN is_admin boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN disabled_at bigint;

-- Every admin action, appended in the transaction of the action itself. Nothing updates or
-- deletes a row: the trigger refuses it, whoever asks (TRUNCATE too).
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the paging cursor
    at        bigint NOT NULL,                    -- ms since the epoch
    actor_id  bigint,                             -- the admin; NULL: the command line on the store
    action    text   NOT NULL,
    target    text   NOT NULL DEFAULT '',         -- "user:<id>", ...
    detail    text   NOT NULL DEFAULT '{}',       -- JSON object
    source    text   NOT NULL DEFAULT ''          -- where from: "http 1.2.3.4", "ws 1.2.3.4", "cli"
);
CREATE FUNCTION yim_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION yim_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION yim_audit_append_only();
