-- Media (docs/protocol.md, "Media, search"): content-addressed blobs and the upload records
-- that name them. Two uploads of the same bytes are two `media` rows over one `media_blobs`
-- row (and one stored blob).

CREATE TABLE IF NOT EXISTS media_blobs (
    sha256       TEXT    PRIMARY KEY,       -- hex digest: the blob store key and the ETag
    size         INTEGER NOT NULL,
    mime         TEXT    NOT NULL,          -- detected from the bytes, never taken from the client
    width        INTEGER,                   -- images only
    height       INTEGER,
    thumb_sha256 TEXT,                      -- WebP thumbnail blob (images only)
    thumb_size   INTEGER,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS media (
    id          INTEGER PRIMARY KEY,        -- Snowflake: the media_id of the API
    sha256      TEXT    NOT NULL,
    uploader_id INTEGER NOT NULL,
    kind        TEXT    NOT NULL,           -- 'image' | 'video' | 'file', as uploaded
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS media_sha256 ON media (sha256);

-- Which timeline entries carry which media. A user may download media that an entry in
-- their visible window of a conversation references (or that they uploaded). Kept inside
-- the very transaction that appends (the append) or recalls (the trigger below) the message.
CREATE TABLE IF NOT EXISTS media_refs (
    media_id INTEGER NOT NULL,
    conv_id  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (media_id, conv_id, seq)
) WITHOUT ROWID;

-- Rows are added by the append itself (append_entry in sqlite_timeline.py), in the same
-- transaction. An AFTER INSERT trigger did it before; it cost every message row, media or
-- not, ~5 µs of the writer's time, so it is gone.
DROP TRIGGER IF EXISTS messages_media_ref;

-- A recalled message no longer lends its media to anyone.
CREATE TRIGGER IF NOT EXISTS messages_media_unref AFTER UPDATE OF recalled ON messages
WHEN new.recalled = 1 AND old.recalled = 0 AND old.kind IN ('image', 'video', 'file') AND json_valid(old.body)
BEGIN
    DELETE FROM media_refs
    WHERE media_id = CAST(json_extract(old.body, '$.media_id') AS INTEGER) AND conv_id = old.conv_id AND seq = old.seq;
END;
