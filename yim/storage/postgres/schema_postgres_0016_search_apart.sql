-- Migration 0016: the history search index leaves the send's transaction.
--
-- The trigram GIN index `messages_search` was an expression index on `messages`: every send
-- of a text, file or custom message parsed its body and inserted its trigrams inside the
-- send's transaction (~18 µs per message of PostgreSQL CPU, docs/performance.md "Cluster
-- path"). Now the trigrams live in `message_search`, written by the search indexer
-- (yim/storage/postgres/search.py, `index_pending`) in batches, once in a cluster, and a
-- send only names its messages in `search_pending`: one row per INSERT statement (one per
-- run of sends of `yim_send_batch`), however many messages the statement appends.
--
-- Nothing is lost and nothing lags for a reader: a message is in `search_pending` from the
-- commit of the transaction that appends it until the indexer pass that moves it into
-- `message_search` (both in one transaction), and a search reads both in one snapshot (the
-- pending ones are checked on the message text itself). Every hit is checked against its
-- `messages` row in the same snapshot, so a recalled message never comes back, even while
-- its trigrams still wait for the indexer's next pass to remove them.

CREATE TABLE message_search (
    msg_id  bigint PRIMARY KEY,
    conv_id bigint NOT NULL,
    seq     bigint NOT NULL,
    text    text   NOT NULL      -- yim_search_text(kind, body) when it was indexed
);
CREATE INDEX message_search_text ON message_search USING gin (text gin_trgm_ops);

-- Entries the indexer has still to (re)read: appended, edited or recalled. Only the indexer
-- deletes rows here, and a writer only inserts new ones, so no writer ever waits on a row
-- of this table (docs/architecture.md §12, "Lock order").
CREATE TABLE search_pending (
    id      bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_ids bigint[] NOT NULL
);

-- Whatever appends entries (yim_send, yim_send_batch, yim_append, a Python job) names the
-- searchable ones in one row: a statement-level trigger, so a run of 240 sends costs one
-- pending row, not 240.
CREATE FUNCTION yim_search_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_pending (msg_ids)
    SELECT array_agg(n.msg_id) FROM yim_new n WHERE n.kind IN ('text', 'file', 'custom') HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_search_appended AFTER INSERT ON messages
REFERENCING NEW TABLE AS yim_new FOR EACH STATEMENT EXECUTE FUNCTION yim_search_appended();

-- Edits and recalls (rare) rewrite a row: the indexer reads it again. Erasure is a recall.
CREATE FUNCTION yim_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_pending (msg_ids) VALUES (ARRAY[NEW.msg_id]);
    RETURN NULL;
END $$;

CREATE TRIGGER messages_search_changed AFTER UPDATE OF body, kind, recalled ON messages
FOR EACH ROW WHEN (OLD.kind IN ('text', 'file', 'custom') AND (NEW.recalled OR NEW.kind IS DISTINCT FROM OLD.kind
    OR yim_search_text(NEW.kind, NEW.body) IS DISTINCT FROM yim_search_text(OLD.kind, OLD.body)))
EXECUTE FUNCTION yim_search_changed();

INSERT INTO message_search (msg_id, conv_id, seq, text)
SELECT msg_id, conv_id, seq, yim_search_text(kind, body) FROM messages
WHERE kind IN ('text', 'file', 'custom') AND NOT recalled AND yim_search_text(kind, body) <> '';

DROP INDEX messages_search;
