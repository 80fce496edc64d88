-- Migration 0002: pushers, one per device: how a device that is not connected is woken
-- (yim/storage/push.py). pushed_seq is the device's push cursor in its user's inbox;
-- lease_until keeps two workers (or a worker and a retry back-off) apart; failures counts
-- the retries in a row (the back-off doubles with each).
CREATE TABLE pushers (
    user_id     INTEGER NOT NULL,
    device_id   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    pushed_seq  INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- Each user's push settings (absent: the defaults, preview on, UTC, no quiet hours) and
-- the conversations they muted for push ("mentions" or "all"; "off" is no row).
CREATE TABLE push_prefs (
    user_id   INTEGER PRIMARY KEY,
    preview   INTEGER NOT NULL DEFAULT 1,
    time_zone TEXT    NOT NULL DEFAULT 'UTC',
    dnd_start INTEGER,                -- minutes after local midnight; NULL: no quiet hours
    dnd_end   INTEGER
);

CREATE TABLE push_mutes (
    user_id INTEGER NOT NULL,
    conv_id INTEGER NOT NULL,
    mute    TEXT    NOT NULL,
    PRIMARY KEY (user_id, conv_id)
) WITHOUT ROWID;
