-- Replies (docs/architecture.md §2.2): a reply's stored body holds "quote", a snapshot of the
-- message it quotes. A recall rewrites the snapshot of every reply to the recalled message,
-- found through this index. Partial: only bodies holding a quote are in it, so a plain send
-- costs one substring test and no index write.
CREATE INDEX messages_quotes ON messages (conv_id, json_extract(body, '$.quote.seq'))
WHERE instr(body, '"quote":{') > 0;
