-- History search lives in its own database file, written by its own thread, so indexing
-- (the trigram tokenizer and FTS5 segment writes, about a third of the writer's time per
-- message when it ran in the message transaction) is off the commit path of messages:
-- see yim/storage/search_sqlite.sql and yim/storage/sqlite_indexer.py.
--
-- Databases made before that held the index here; drop it (the new file is built from
-- `messages` on first start).
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_update;
DROP TABLE IF EXISTS message_fts;
DROP VIEW IF EXISTS message_search_text;
DROP TABLE IF EXISTS search_state;
