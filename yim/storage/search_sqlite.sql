-- The history search index of the embedded store, in its own database file next to the
-- store (`yim.db` -> `yim-search.db`), written by its own thread (yim/storage/sqlite_indexer.py).
--
-- An FTS5 trigram index over the text of text messages and the names of files. Trigrams
-- match any substring of 3 or more characters, which is what Chinese (no spaces between
-- words) needs: "亿级消息" finds "支持亿级消息量". Shorter queries are answered by a scan of
-- the user's own conversations (yim/storage/sqlite_search.py).
--
-- Derived data: everything here is rebuilt from `messages` if the file is lost.

CREATE TABLE IF NOT EXISTS search_text (
    msg_id INTEGER PRIMARY KEY,       -- the message's Snowflake id
    text   TEXT    NOT NULL           -- what is indexed: the text, or the file name
);

-- External content: the index holds only trigrams, the text is read from search_text.
CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(
    text,
    content = 'search_text',
    content_rowid = 'msg_id',
    tokenize = 'trigram'
);

CREATE TRIGGER IF NOT EXISTS search_text_insert AFTER INSERT ON search_text BEGIN
    INSERT INTO message_fts (rowid, text) VALUES (new.msg_id, new.text);
END;

-- The 'delete' command of an external-content index must be given the exact indexed text.
CREATE TRIGGER IF NOT EXISTS search_text_delete AFTER DELETE ON search_text BEGIN
    INSERT INTO message_fts (message_fts, rowid, text) VALUES ('delete', old.msg_id, old.text);
END;

-- 'indexed_upto': the highest msg_id ever indexed; a restart re-reads the messages from a
-- margin below it, which covers what was committed in the store but not yet indexed.
CREATE TABLE IF NOT EXISTS search_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
