-- Migration 0004: media and history search, mirroring schema_sqlite_media.sql and
-- schema_sqlite_search.sql (docs/protocol.md, "Media, search").

-- Content-addressed blobs and the upload records that name them. Two uploads of the same
-- bytes are two `media` rows over one `media_blobs` row (and one stored blob).
CREATE TABLE media_blobs (
    sha256       text   PRIMARY KEY,        -- hex digest: the blob store key and the ETag
    size         bigint NOT NULL,
    mime         text   NOT NULL,           -- detected from the bytes, never taken from the client
    width        integer,                   -- images only
    height       integer,
    thumb_sha256 text,                      -- WebP thumbnail blob (images only)
    thumb_size   bigint,
    created_at   bigint NOT NULL
);

CREATE TABLE media (
    id          bigint PRIMARY KEY,         -- Snowflake: the media_id of the API
    sha256      text   NOT NULL,
    uploader_id bigint NOT NULL,
    kind        text   NOT NULL,            -- 'image' | 'video' | 'file', as uploaded
    name        text   NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX media_sha256 ON media (sha256);

-- Which timeline entries carry which media. A user may download media that an entry in
-- their visible window of a conversation references (or that they uploaded). Kept by the
-- triggers below, i.e. inside the very transaction that appends or recalls the message
-- (whichever path appends it: yim_send, yim_append, a Python job).
CREATE TABLE media_refs (
    media_id bigint NOT NULL,
    conv_id  bigint NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (media_id, conv_id, seq)
);

CREATE FUNCTION yim_media_ref() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_media text := NEW.body::jsonb ->> 'media_id';
BEGIN
    IF v_media IS NOT NULL THEN
        INSERT INTO media_refs (media_id, conv_id, seq) VALUES (v_media::bigint, NEW.conv_id, NEW.seq)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

-- A recalled message no longer lends its media to anyone.
CREATE FUNCTION yim_media_unref() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_media text := OLD.body::jsonb ->> 'media_id';
BEGIN
    IF v_media IS NOT NULL THEN
        DELETE FROM media_refs WHERE media_id = v_media::bigint AND conv_id = OLD.conv_id AND seq = OLD.seq;
    END IF;
    RETURN NULL;
END $$;

-- The WHEN clauses keep text sends free of any trigger call.
CREATE TRIGGER messages_media_ref AFTER INSERT ON messages
FOR EACH ROW WHEN (NEW.kind IN ('image', 'video', 'file'))
EXECUTE FUNCTION yim_media_ref();

CREATE TRIGGER messages_media_unref AFTER UPDATE OF recalled ON messages
FOR EACH ROW WHEN (NEW.recalled AND NOT OLD.recalled AND OLD.kind IN ('image', 'video', 'file'))
EXECUTE FUNCTION yim_media_unref();

-- History search: a pg_trgm GIN index over the searchable text of an entry (a text's text,
-- a file's name). Trigrams answer any substring of 3 or more characters, case-insensitively
-- (ILIKE), which is what Chinese (no spaces between words) needs: '%亿级消息%' finds
-- '支持亿级消息量'. Shorter terms are answered by a scan of the user's own conversations
-- (yim/storage/postgres_search.py). The text itself stays in `messages.body`; the index
-- holds only trigrams, and is partial: other kinds and recalled messages are not in it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- IMMUTABLE (the text is a function of kind and body), so it can be indexed; a SQL function,
-- so the planner inlines it and matches queries written with it against the index.
CREATE FUNCTION yim_search_text(p_kind text, p_body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind WHEN 'text' THEN p_body::jsonb ->> 'text' WHEN 'file' THEN p_body::jsonb ->> 'name' END
$$;

CREATE INDEX messages_search ON messages USING gin (yim_search_text(kind, body) gin_trgm_ops)
WHERE kind IN ('text', 'file') AND NOT recalled;
