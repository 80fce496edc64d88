-- The history search index of the embedded store, in its own database file next to the
-- store (`yim.db` -> `yim-search.db`), written by its own thread (yim/storage/sqlite_indexer.py).
--
-- An FTS5 trigram index over the text of text messages and the names of files. Trigrams
-- match any substring of 3 or more characters, which is what Chinese (no spaces between
-- words) needs: "亿级消息" finds "支持亿级消息量". Shorter queries are answered by a scan of
-- the user's own conversations (yim/storage/sqlite_search.py).
--
-- rowid = the message's msg_id. The table keeps its own copy of the text, so a recall
-- removes exactly what was indexed (DELETE ... WHERE rowid = ?). No triggers: inserting
-- through a trigger cost 4x a direct insert here.
--
-- Derived data: the file is rebuilt from `messages` if it is lost, or if its
-- `PRAGMA user_version` is not the one the indexer expects.

CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(text, tokenize = 'trigram');

-- 'indexed_upto': the highest msg_id ever indexed; a restart re-reads the messages from a
-- margin below it, which covers what was committed in the store but not yet indexed.
CREATE TABLE IF NOT EXISTS search_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
