-- Migration 0015 (PostgreSQL): push cursors in read-fan-out groups (yim/storage/push.py). A message of a
-- read-fan-out group writes no inbox entry, so a pusher's inbox cursor never sees it: each
-- device keeps, per such group, the last timeline seq considered for it. No row: the
-- device's cursor is the member's read marker (or where the group switched to read fan-out,
-- or the member joined). Written only under the user's anchor, by the push worker and
-- pusher_set, never on the send path.
CREATE TABLE push_group_cursors (
    user_id    bigint NOT NULL,
    device_id  text   NOT NULL,
    conv_id    bigint NOT NULL,
    pushed_seq bigint NOT NULL,
    PRIMARY KEY (user_id, device_id, conv_id)
);
