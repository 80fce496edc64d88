-- History search (docs/protocol.md, "Media, search"): an FTS5 trigram index over the text of
-- text messages and the names of files. Trigrams match any substring of 3 or more
-- characters, which is what Chinese (no spaces between words) needs: "亿级消息" finds
-- "支持亿级消息量". Shorter queries are answered by a scan of the user's own conversations
-- (yim/storage/sqlite_search.py).
--
-- External content: the index stores only the trigrams; the text itself stays in
-- `messages` (as JSON) and is read through this view, so nothing is stored twice.

CREATE VIEW IF NOT EXISTS message_search_text AS
SELECT msg_id,
       CASE kind WHEN 'text' THEN json_extract(body, '$.text') ELSE json_extract(body, '$.name') END AS text
FROM messages
WHERE kind IN ('text', 'file') AND recalled = 0;

CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(
    text,
    content = 'message_search_text',
    content_rowid = 'msg_id',
    tokenize = 'trigram'
);

-- Index what a database created before this file existed already holds, once.
CREATE TABLE IF NOT EXISTS search_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO message_fts (message_fts) SELECT 'rebuild' WHERE NOT EXISTS (SELECT 1 FROM search_state WHERE name = 'built');
INSERT OR IGNORE INTO search_state (name, value) VALUES ('built', 1);

-- Kept in sync by triggers, inside the transaction that appends, recalls or edits a message.
-- The 'delete' command of an external-content index must be given the exact indexed text,
-- which the trigger takes from the old row before it changes.
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages
WHEN new.kind IN ('text', 'file') AND new.recalled = 0
BEGIN
    INSERT INTO message_fts (rowid, text)
    VALUES (new.msg_id,
            CASE new.kind WHEN 'text' THEN json_extract(new.body, '$.text') ELSE json_extract(new.body, '$.name') END);
END;

-- One trigger for both halves of an update, so that the old text leaves the index before
-- the new one enters it (an edit keeps the same rowid).
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF body, recalled ON messages
WHEN (old.kind IN ('text', 'file') AND old.recalled = 0) OR (new.kind IN ('text', 'file') AND new.recalled = 0)
BEGIN
    INSERT INTO message_fts (message_fts, rowid, text)
    SELECT 'delete', old.msg_id,
           CASE old.kind WHEN 'text' THEN json_extract(old.body, '$.text') ELSE json_extract(old.body, '$.name') END
    WHERE old.kind IN ('text', 'file') AND old.recalled = 0;
    INSERT INTO message_fts (rowid, text)
    SELECT new.msg_id,
           CASE new.kind WHEN 'text' THEN json_extract(new.body, '$.text') ELSE json_extract(new.body, '$.name') END
    WHERE new.kind IN ('text', 'file') AND new.recalled = 0;
END;
