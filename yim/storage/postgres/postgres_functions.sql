-- Server-side functions of the PostgreSQL store: the message hot path in one round trip.
--
-- These are code, not data: applied with CREATE OR REPLACE on every node start when the
-- file changed (its hash is kept in yim_migrations), after the table migrations. They
-- mirror yim/storage/sqlite_timeline.py (the behavioural spec) statement for statement.
--
-- Checks never raise: a refused send returns (o_err, o_err_msg) having written nothing,
-- so a batch of sends runs in one transaction without a savepoint per message.

-- May p_sender message p_to directly? NULL, or the error (blocks, then dm_policy).
-- (plpgsql, not sql: a non-inlined SQL function is planned again on every call.)
CREATE OR REPLACE FUNCTION yim_direct_denied(p_sender bigint, p_to bigint, OUT o_err text, OUT o_msg text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_blocked_by_them boolean; v_blocked_them boolean; v_friends_only boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM blocks WHERE user_id = p_to AND blocked_id = p_sender),
           EXISTS (SELECT 1 FROM blocks WHERE user_id = p_sender AND blocked_id = p_to),
           COALESCE((SELECT dm_policy FROM privacy WHERE user_id = p_to) = 'friends'
                    AND NOT EXISTS (SELECT 1 FROM friends WHERE user_id = p_to AND friend_id = p_sender), false)
      INTO v_blocked_by_them, v_blocked_them, v_friends_only;
    IF v_blocked_by_them THEN
        o_err := 'blocked'; o_msg := 'this user does not accept messages from you';
    ELSIF v_blocked_them THEN
        o_err := 'blocked'; o_msg := 'you blocked this user; unblock them first';
    ELSIF v_friends_only THEN
        o_err := 'friends_only'; o_msg := 'this user accepts direct messages from friends only';
    END IF;
END $$;


-- The lock prelude of a write transaction (docs/architecture.md, "Lock order"). Every row
-- lock a transaction of the writer may have to WAIT for is taken here, first, in one global
-- order: conversations by id (exclusive for timeline and membership writers, shared for read
-- markers), then users by id (their inbox seq). What the transaction writes afterwards is
-- guarded by one of these anchors, so two transactions that both passed their prelude never
-- wait for each other, and transactions in their prelude wait in the same order: no cycle,
-- hence no deadlock, whatever the nodes and the interleaving.
--   p_convs       conversations appended to or whose membership changes (exclusive)
--   p_read_convs  conversations whose read markers move (shared; exclusive if also in p_convs)
--   p_members_of  conversations whose current members' inboxes get the entry (write fan-out)
--   p_users       users whose inbox seq moves, named directly
--   p_pair_lo/hi  direct pairs by user: their conversation if it exists (exclusive), both users
--   p_peer_user/conv  (user, direct conversation): the peer, who gets a read receipt
--   p_all_members_of  conversations whose current members all get an entry (dissolve)
CREATE OR REPLACE FUNCTION yim_lock(
    p_convs bigint[], p_read_convs bigint[], p_members_of bigint[], p_users bigint[],
    p_pair_lo bigint[], p_pair_hi bigint[], p_peer_user bigint[], p_peer_conv bigint[],
    p_all_members_of bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_excl bigint[]; v_id bigint; v_exclusive boolean;
BEGIN
    -- direct_pairs rows never change once written: reading them needs no lock.
    v_excl := ARRAY(SELECT unnest(p_convs)
                    UNION SELECT dp.conv_id FROM unnest(p_pair_lo, p_pair_hi) AS p(lo, hi)
                           JOIN direct_pairs dp ON dp.user_lo = p.lo AND dp.user_hi = p.hi);
    IF cardinality(p_read_convs) = 0 THEN
        PERFORM 1 FROM conversations WHERE id = ANY (v_excl) ORDER BY id FOR NO KEY UPDATE;
    ELSE
        FOR v_id, v_exclusive IN
            SELECT x.id, bool_or(x.excl) FROM (SELECT unnest(v_excl) AS id, true AS excl
                                              UNION ALL SELECT unnest(p_read_convs), false) x
             GROUP BY x.id ORDER BY x.id
        LOOP
            IF v_exclusive THEN
                PERFORM 1 FROM conversations WHERE id = v_id FOR NO KEY UPDATE;
            ELSE
                PERFORM 1 FROM conversations WHERE id = v_id FOR SHARE;
            END IF;
        END LOOP;
    END IF;
    -- Memberships hold still from here on: every membership writer locks the conversation.
    PERFORM 1 FROM users WHERE id IN (
            SELECT unnest(p_users) UNION SELECT unnest(p_pair_lo) UNION SELECT unnest(p_pair_hi)
            UNION SELECT uc.user_id FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id
                   WHERE uc.conv_id = ANY (p_members_of) AND c.fanout = 'write' AND uc.left_seq IS NULL
            UNION SELECT uc.user_id FROM user_conversations uc
                   WHERE uc.conv_id = ANY (p_all_members_of) AND uc.left_seq IS NULL
            UNION SELECT uc.peer_id FROM unnest(p_peer_user, p_peer_conv) AS q(u, c)
                   JOIN user_conversations uc ON uc.user_id = q.u AND uc.conv_id = q.c
                   WHERE uc.peer_id IS NOT NULL)
     ORDER BY id FOR NO KEY UPDATE;
    -- A pair's first message may have created its conversation on another node while this
    -- transaction waited for the pair's users. Take that conversation now without waiting:
    -- waiting for it here, after users, could close a cycle. If another transaction holds
    -- it, give up, and the writer reruns the work with the conversation in its prelude.
    FOR v_id IN SELECT dp.conv_id FROM unnest(p_pair_lo, p_pair_hi) AS p(lo, hi)
                  JOIN direct_pairs dp ON dp.user_lo = p.lo AND dp.user_hi = p.hi
                 WHERE dp.conv_id <> ALL (v_excl)
    LOOP
        BEGIN
            PERFORM 1 FROM conversations WHERE id = v_id FOR NO KEY UPDATE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'direct conversation % was created meanwhile and is busy; retry', v_id
                USING ERRCODE = 'serialization_failure';
        END;
    END LOOP;
END $$;


-- Append one entry to a conversation timeline and fan it out by the conversation's policy,
-- in two statements. The conversation seq (UPDATE of its row, which also locks it) and each
-- inbox seq (UPDATE of each recipient's user row) are allocated in the caller's
-- transaction: gap-free, never reused, whatever happens to the process or to Redis.
CREATE OR REPLACE FUNCTION yim_append(
    p_conv bigint, p_msg_id bigint, p_sender bigint, p_device text, p_kind text, p_body text,
    p_client_msg_id text, p_created bigint, p_uncounted boolean, p_mentions bigint[], p_mention_all boolean,
    p_also_inbox bigint[],
    OUT o_seq bigint, OUT o_fanout text, OUT o_sender_inbox bigint, OUT o_users bigint[], OUT o_seqs bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_recipients bigint[];
    v_claimed boolean;
BEGIN
    WITH c AS (
        UPDATE conversations c
           SET last_seq = c.last_seq + 1, last_msg_id = p_msg_id, updated_at = p_created,
               mention_all_seq = CASE WHEN p_mention_all THEN c.last_seq + 1 ELSE c.mention_all_seq END
         WHERE c.id = p_conv
        RETURNING c.last_seq, c.fanout
    )
    SELECT c.last_seq, c.fanout,
           CASE WHEN c.fanout = 'write' THEN ARRAY(
               SELECT uc.user_id FROM user_conversations uc WHERE uc.conv_id = p_conv AND uc.left_seq IS NULL
               UNION SELECT unnest(p_also_inbox))
           ELSE COALESCE(p_also_inbox, '{}') END
      INTO o_seq, o_fanout, v_recipients FROM c;
    IF o_seq IS NULL THEN
        RAISE EXCEPTION 'no conversation %', p_conv USING ERRCODE = 'no_data_found';
    END IF;
    -- The rest in one statement; `= ANY (array)` keeps the user updates on the primary key.
    WITH bumped AS (
        UPDATE users u SET inbox_seq = u.inbox_seq + 1 WHERE u.id = ANY (v_recipients)
        RETURNING u.id, u.inbox_seq
    ), inboxed AS (
        INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, created_at)
        SELECT b.id, b.inbox_seq, 'message', p_conv, o_seq, p_created FROM bumped b
    ), sender AS (
        SELECT COALESCE((SELECT b.inbox_seq FROM bumped b WHERE b.id = p_sender), 0) AS inbox_seq
    ), stored AS (
        INSERT INTO messages (conv_id, seq, msg_id, sender_id, sender_device, kind, body, client_msg_id,
                              sender_inbox_seq, created_at, uncounted, mentions, mention_all)
        SELECT p_conv, o_seq, p_msg_id, p_sender, p_device, p_kind, p_body, p_client_msg_id,
               sender.inbox_seq, p_created, p_uncounted, NULLIF(p_mentions, '{}'), p_mention_all
          FROM sender
    ), claimed AS (
        INSERT INTO client_msg_ids (sender_id, client_msg_id, conv_id, seq)
        VALUES (p_sender, p_client_msg_id, p_conv, o_seq)
        ON CONFLICT DO NOTHING RETURNING 1
    ), read_own AS (
        -- Sending reads the conversation up to one's own entry (unread never counts it).
        UPDATE user_conversations uc SET read_seq = o_seq
         WHERE uc.user_id = p_sender AND uc.conv_id = p_conv AND uc.left_seq IS NULL
    )
    SELECT sender.inbox_seq,
           COALESCE((SELECT array_agg(b.id ORDER BY b.id) FROM bumped b), '{}'),
           COALESCE((SELECT array_agg(b.inbox_seq ORDER BY b.id) FROM bumped b), '{}'),
           EXISTS (SELECT 1 FROM claimed)
      INTO o_sender_inbox, o_users, o_seqs, v_claimed
      FROM sender;
    IF NOT v_claimed THEN
        -- The same (sender, client_msg_id) committed meanwhile on another connection: make
        -- the batch retry; the retry finds it in the idempotency lookup.
        RAISE EXCEPTION 'concurrent send of client_msg_id %', p_client_msg_id USING ERRCODE = 'serialization_failure';
    END IF;
    IF cardinality(p_mentions) > 0 THEN
        UPDATE user_conversations SET mention_seq = o_seq WHERE conv_id = p_conv AND user_id = ANY (p_mentions);
    END IF;
END $$;


-- A user's message: idempotency, the direct conversation (created on first message) or the
-- group checks, then the append. One call per message; see PostgresStore.send_message.
CREATE OR REPLACE FUNCTION yim_send(
    p_msg_id bigint, p_new_conv bigint, p_sender bigint, p_device text, p_kind text, p_body text,
    p_cmid text, p_created bigint, p_to bigint, p_conv bigint, p_mentions bigint[], p_mention_all boolean,
    OUT o_err text, OUT o_err_msg text, OUT o_dup boolean,
    OUT o_conv bigint, OUT o_seq bigint, OUT o_sender_inbox bigint, OUT o_fanout text,
    OUT o_users bigint[], OUT o_seqs bigint[],
    -- the stored message, for duplicates only
    OUT d_msg_id bigint, OUT d_device text, OUT d_kind text, OUT d_body text, OUT d_created bigint,
    OUT d_recalled boolean, OUT d_mentions bigint[], OUT d_mention_all boolean
) LANGUAGE plpgsql AS $$
DECLARE
    v_lo bigint; v_hi bigint;
    v_exists boolean; v_type text; v_mute_all boolean; v_dissolved boolean;
    v_role text; v_left bigint; v_muted_until bigint; v_peer bigint; v_found bigint;
BEGIN
    o_dup := false;
    -- Idempotency first: a retried client_msg_id returns the original and writes nothing.
    SELECT m.conv_id, m.seq, m.sender_inbox_seq, m.msg_id, m.sender_device, m.kind, m.body, m.created_at,
           m.recalled, m.mentions, m.mention_all
      INTO o_conv, o_seq, o_sender_inbox, d_msg_id, d_device, d_kind, d_body, d_created,
           d_recalled, d_mentions, d_mention_all
      FROM client_msg_ids k JOIN messages m ON m.conv_id = k.conv_id AND m.seq = k.seq
     WHERE k.sender_id = p_sender AND k.client_msg_id = p_cmid;
    IF FOUND THEN
        o_dup := true;
        RETURN;
    END IF;

    IF p_to IS NOT NULL THEN
        IF p_to = p_sender THEN
            o_err := 'bad_request'; o_err_msg := 'cannot send a direct message to yourself'; RETURN;
        END IF;
        IF cardinality(p_mentions) > 0 OR p_mention_all THEN
            o_err := 'bad_request'; o_err_msg := 'mentions are for group messages'; RETURN;
        END IF;
        v_lo := LEAST(p_sender, p_to);
        v_hi := GREATEST(p_sender, p_to);
        SELECT dp.conv_id INTO o_conv FROM direct_pairs dp WHERE dp.user_lo = v_lo AND dp.user_hi = v_hi;
        IF o_conv IS NULL AND NOT EXISTS (SELECT 1 FROM users WHERE id = p_to) THEN
            o_err := 'not_found'; o_err_msg := format('no user %s', p_to); RETURN;
        END IF;
        SELECT d.o_err, d.o_msg INTO o_err, o_err_msg FROM yim_direct_denied(p_sender, p_to) d;
        IF o_err IS NOT NULL THEN
            RETURN;
        END IF;
        IF o_conv IS NULL THEN
            INSERT INTO direct_pairs (user_lo, user_hi, conv_id) VALUES (v_lo, v_hi, p_new_conv)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                o_conv := p_new_conv;
                INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, member_count)
                VALUES (o_conv, 'direct', p_created, 0, o_conv, p_created, 2);
                INSERT INTO user_conversations (user_id, conv_id, peer_id)
                VALUES (p_sender, o_conv, p_to), (p_to, o_conv, p_sender);
            ELSE  -- a first message of the same pair committed meanwhile on another connection
                SELECT dp.conv_id INTO o_conv FROM direct_pairs dp WHERE dp.user_lo = v_lo AND dp.user_hi = v_hi;
            END IF;
        END IF;
    ELSE
        o_conv := p_conv;
        -- The conversation is locked (the writer's prelude, yim_lock, took it already):
        -- membership changes lock it too, so the checks below and the append see one
        -- state of the group.
        SELECT true, c.type, c.mute_all, c.dissolved, uc.role, uc.left_seq, uc.muted_until, uc.peer_id
          INTO v_exists, v_type, v_mute_all, v_dissolved, v_role, v_left, v_muted_until, v_peer
          FROM conversations c LEFT JOIN user_conversations uc ON uc.conv_id = c.id AND uc.user_id = p_sender
         WHERE c.id = p_conv FOR NO KEY UPDATE OF c;
        IF v_type = 'service' THEN  -- customer service: the writer runs its Python routing job
            o_err := 'service_conversation'; RETURN;
        END IF;
        IF v_exists IS NULL OR v_role IS NULL OR v_left IS NOT NULL THEN
            IF v_dissolved THEN
                o_err := 'group_dissolved'; o_err_msg := format('group %s was dissolved', p_conv); RETURN;
            END IF;
            o_err := 'not_member'; o_err_msg := format('you are not a member of conversation %s', p_conv); RETURN;
        END IF;
        IF v_type = 'group' THEN
            IF v_muted_until > p_created THEN
                o_err := 'muted'; o_err_msg := format('you are muted in this group until %s', v_muted_until); RETURN;
            END IF;
            IF v_mute_all AND v_role = 'member' THEN
                o_err := 'muted'; o_err_msg := 'the whole group is muted; only the owner and admins may speak'; RETURN;
            END IF;
            IF p_mention_all AND v_role = 'member' THEN
                o_err := 'forbidden'; o_err_msg := 'only the owner and admins may mention everyone'; RETURN;
            END IF;
            IF cardinality(p_mentions) > 0 THEN
                SELECT count(*) INTO v_found FROM user_conversations
                 WHERE conv_id = p_conv AND left_seq IS NULL AND user_id = ANY (p_mentions);
                IF v_found <> (SELECT count(DISTINCT x) FROM unnest(p_mentions) x) THEN
                    o_err := 'bad_request'; o_err_msg := 'every mentioned user must be a member of the group'; RETURN;
                END IF;
            END IF;
        ELSE
            IF cardinality(p_mentions) > 0 OR p_mention_all THEN
                o_err := 'bad_request'; o_err_msg := 'mentions are for group messages'; RETURN;
            END IF;
            SELECT d.o_err, d.o_msg INTO o_err, o_err_msg FROM yim_direct_denied(p_sender, v_peer) d;
            IF o_err IS NOT NULL THEN
                RETURN;
            END IF;
        END IF;
    END IF;

    SELECT a.o_seq, a.o_fanout, a.o_sender_inbox, a.o_users, a.o_seqs
      INTO o_seq, o_fanout, o_sender_inbox, o_users, o_seqs
      FROM yim_append(o_conv, p_msg_id, p_sender, p_device, p_kind, p_body, p_cmid, p_created, false,
                      p_mentions, p_mention_all, '{}') a;
END $$;
