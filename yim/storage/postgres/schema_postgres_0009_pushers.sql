-- Migration 0006: pushers, one per device: how a device that is not connected is woken
-- (yim/storage/push.py). pushed_seq is the device's push cursor in its user's inbox;
-- lease_until keeps the nodes (or a node and a retry back-off) apart: a node claims work
-- with SELECT ... FOR UPDATE SKIP LOCKED and holds it by the lease, not by a transaction;
-- failures counts the retries in a row (the back-off doubles with each).
CREATE TABLE pushers (
    user_id     bigint NOT NULL,
    device_id   text   NOT NULL,
    kind        text   NOT NULL,
    target      text   NOT NULL,
    created_at  bigint NOT NULL,
    pushed_seq  bigint NOT NULL DEFAULT 0,
    lease_until bigint NOT NULL DEFAULT 0,
    failures    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
);

-- Each user's push settings (absent: the defaults, preview on, UTC, no quiet hours) and
-- the conversations they muted for push ("mentions" or "all"; "off" is no row).
CREATE TABLE push_prefs (
    user_id   bigint  PRIMARY KEY,
    preview   boolean NOT NULL DEFAULT true,
    time_zone text    NOT NULL DEFAULT 'UTC',
    dnd_start integer,                -- minutes after local midnight; NULL: no quiet hours
    dnd_end   integer
);

CREATE TABLE push_mutes (
    user_id bigint NOT NULL,
    conv_id bigint NOT NULL,
    mute    text   NOT NULL,
    PRIMARY KEY (user_id, conv_id)
);
