-- Replies (docs/architecture.md §2.2): a reply's stored body holds "quote", a snapshot of the
-- message it quotes. A recall rewrites the snapshot of every reply to the recalled message,
-- found through this index. Partial: only bodies holding a quote are in it.
CREATE INDEX messages_quotes ON messages (conv_id, ((body::jsonb -> 'quote' ->> 'seq')::bigint))
WHERE strpos(body, '"quote":{') > 0;

-- Custom messages are found by their text fallback, like a text message by its text.
CREATE OR REPLACE FUNCTION yim_search_text(p_kind text, p_body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind WHEN 'text' THEN p_body::jsonb ->> 'text' WHEN 'custom' THEN p_body::jsonb ->> 'text'
        WHEN 'file' THEN p_body::jsonb ->> 'name' END
$$;

DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING gin (yim_search_text(kind, body) gin_trgm_ops)
WHERE kind IN ('text', 'file', 'custom') AND NOT recalled;
