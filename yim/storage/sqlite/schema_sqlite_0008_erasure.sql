-- Migration 0008 (SQLite): erasing accounts (yim/storage/erase.py, docs/protocol.md §19.8).
-- users.erased_at: set once, when the account is erased; the row stays (its id names the
-- sender of old entries, its username stays reserved) with its profile blanked.
ALTER TABLE users ADD COLUMN erased_at INTEGER;

-- One row per account whose erasure was asked for: 'pending' (a self-service deletion
-- waiting for its grace period; a login deletes the row), 'running' (claimed: the account is
-- erased, its memberships and messages are being cleared), 'done'.
CREATE TABLE account_erasures (
    user_id      INTEGER PRIMARY KEY,
    state        TEXT    NOT NULL,
    mode         TEXT    NOT NULL,               -- 'tombstone' | 'remove'
    requested_at INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,               -- ms: a pending row runs from then
    claimed_at   INTEGER,                        -- ms: when a node took it (a stale claim is retaken)
    done_at      INTEGER
);
CREATE INDEX account_erasures_due ON account_erasures (state, due_at);
