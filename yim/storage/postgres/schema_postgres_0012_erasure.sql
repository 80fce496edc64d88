-- Migration 0012 (PostgreSQL): erasing accounts, as schema_sqlite_0008_erasure.sql.
ALTER TABLE users ADD COLUMN erased_at bigint;

CREATE TABLE account_erasures (
    user_id      bigint PRIMARY KEY,
    state        text   NOT NULL,                -- 'pending' | 'running' | 'done'
    mode         text   NOT NULL,                -- 'tombstone' | 'remove'
    requested_at bigint NOT NULL,
    due_at       bigint NOT NULL,
    claimed_at   bigint,
    done_at      bigint
);
CREATE INDEX account_erasures_due ON account_erasures (state, due_at);
