-- Server-side functions of the PostgreSQL store: the message hot path in one round trip.
--
-- These are code, not data: applied with CREATE OR REPLACE on every node start when the
-- file changed (its hash is kept in yim_migrations), after the table migrations. They
-- mirror yim/storage/sqlite_timeline.py (the behavioural spec) statement for statement.
--
-- Checks never raise: a refused send returns (o_err, o_err_msg) having written nothing,
-- so a batch of sends runs in one transaction without a savepoint per message.

-- May p_sender message p_to directly? One row: (NULL, NULL), or the error (blocks, then
-- dm_policy). The rule itself, in SQL so that a caller's statement inlines it (the batch
-- send joins it LATERAL over all its messages at once).
CREATE OR REPLACE FUNCTION yim_direct_denial(p_sender bigint, p_to bigint)
RETURNS TABLE (o_err text, o_msg text) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN b.by_them OR b.them THEN 'blocked' WHEN b.friends_only THEN 'friends_only' END,
           CASE WHEN b.by_them THEN 'this user does not accept messages from you'
                WHEN b.them THEN 'you blocked this user; unblock them first'
                WHEN b.friends_only THEN 'this user accepts direct messages from friends only' END
      FROM (SELECT EXISTS (SELECT 1 FROM blocks WHERE user_id = p_to AND blocked_id = p_sender) AS by_them,
                   EXISTS (SELECT 1 FROM blocks WHERE user_id = p_sender AND blocked_id = p_to) AS them,
                   COALESCE((SELECT dm_policy FROM privacy WHERE user_id = p_to) = 'friends'
                            AND NOT EXISTS (SELECT 1 FROM friends WHERE user_id = p_to AND friend_id = p_sender),
                            false) AS friends_only
            OFFSET 0) b  -- each EXISTS once: not pulled up into both CASEs
$$;

-- The same for one pair, as PL/pgSQL: a statement of a PL/pgSQL caller that calls it keeps
-- a cached plan (a non-inlined SQL function is planned again on every call).
CREATE OR REPLACE FUNCTION yim_direct_denied(p_sender bigint, p_to bigint, OUT o_err text, OUT o_msg text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT d.o_err, d.o_msg INTO o_err, o_msg FROM yim_direct_denial(p_sender, p_to) d;
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


-- A run of N sends in one call, set-based: the outcome of each message and every row
-- written are those of N calls of yim_send in array order (tests/test_pg_send_batch.py
-- compares them row for row), but each statement runs once over the whole run, so its
-- executor set-up is paid per batch, not per message (docs/performance.md, "Cluster
-- path"). Three phases:
--   1. one statement reads all a run needs: earlier sends of each (sender, client_msg_id),
--      each direct pair's conversation, the sender's membership, blocks and privacy,
--      whether the mentioned users are members;
--   2. a loop without SQL walks the messages in order and decides each one: a duplicate
--      (of an earlier send, or of an earlier message of this run), a refusal, or an append
--      with its conversation seq; the first accepted message of a new pair opens its
--      conversation;
--   3. a few statements write the accepted messages: new pairs, idempotency keys, then
--      one statement with the inbox fan-out (each inbox's seqs numbered in run order), the
--      messages, the conversation heads, read markers and mentions; it returns the rows.
-- Mentions come flattened: p_mention_of[j] is the ordinal (1-based) of the message that
-- mentions p_mention[j], in the message's order. The caller's prelude (yim_lock) holds
-- every conversation and user row this writes, as for yim_send.
CREATE OR REPLACE FUNCTION yim_send_batch(
    p_msg_id bigint[], p_new_conv bigint[], p_sender bigint[], p_device text[], p_kind text[], p_body text[],
    p_cmid text[], p_created bigint[], p_to bigint[], p_conv bigint[], p_mention_all boolean[],
    p_mention_of int[], p_mention bigint[]
) RETURNS TABLE (
    o_err text, o_err_msg text, o_dup boolean,
    o_conv bigint, o_seq bigint, o_sender_inbox bigint, o_fanout text,
    o_users bigint[], o_seqs bigint[],
    d_msg_id bigint, d_device text, d_kind text, d_body text, d_created bigint,
    d_recalled boolean, d_mentions bigint[], d_mention_all boolean
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n int := cardinality(p_msg_id);
    -- phase 1, per message
    l_key int[];            -- (sender, client_msg_id), numbered densely
    l_pair int[];           -- the direct pair of a send by user id, numbered densely
    l_slot int[];           -- the existing conversation it goes to, numbered densely
    l_stored_conv bigint[]; l_stored_seq bigint[];  -- an earlier send with the same key
    l_to_exists boolean[];
    l_deny text[]; l_deny_msg text[];
    l_type text[]; l_mute_all boolean[]; l_dissolved boolean[]; l_role text[]; l_left bigint[];
    l_muted_until bigint[]; l_mentions int[]; l_mentions_ok boolean[];
    -- per conversation slot
    s_conv bigint[]; s_last bigint[]; s_fanout text[];
    -- per pair and per key
    pair_slot int[] := '{}'; key_origin int[] := '{}';
    v_known_pairs int[]; v_known_slots int[];  -- pairs with a conversation already, and its slot
    -- phase 2, per message: the answer
    r_err text[] := array_fill(NULL::text, ARRAY[n]); r_msg text[] := array_fill(NULL::text, ARRAY[n]);
    r_dup boolean[] := array_fill(false, ARRAY[n]);
    r_conv bigint[] := array_fill(NULL::bigint, ARRAY[n]); r_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_fanout text[] := array_fill(NULL::text, ARRAY[n]);
    r_src int[] := array_fill(NULL::int, ARRAY[n]);  -- the accepted message this one is (or duplicates)
    v_accepted int[] := '{}'; v_opened int[] := '{}'; v_opened_convs bigint[] := '{}';
    v_slots int; v_slot int; v_pair int; v_key int; v_origin int; v_count bigint;
BEGIN
    IF n IS NULL THEN
        RETURN;
    END IF;
    WITH inp AS (
        SELECT t.i::int AS i, t.sender, t.cmid, t.to_, t.conv,
               CASE WHEN t.to_ IS NOT NULL AND t.to_ <> t.sender THEN LEAST(t.sender, t.to_) END AS lo,
               CASE WHEN t.to_ IS NOT NULL AND t.to_ <> t.sender THEN GREATEST(t.sender, t.to_) END AS hi
          FROM unnest(p_sender, p_cmid, p_to, p_conv) WITH ORDINALITY AS t(sender, cmid, to_, conv, i)
    ), ment AS (
        SELECT x.i, count(*)::int AS n, count(DISTINCT x.u) = count(DISTINCT uc.user_id) AS ok
          FROM unnest(p_mention_of, p_mention) AS x(i, u)
          JOIN inp ON inp.i = x.i
          LEFT JOIN user_conversations uc ON uc.conv_id = inp.conv AND uc.user_id = x.u AND uc.left_seq IS NULL
         GROUP BY x.i
    ), looked AS (
        SELECT inp.i, inp.sender, inp.cmid, inp.lo, inp.hi, k.conv_id AS stored_conv, k.seq AS stored_seq,
               COALESCE(inp.conv, dp.conv_id) AS target_conv,
               CASE WHEN inp.lo IS NOT NULL AND dp.conv_id IS NULL
                    THEN EXISTS (SELECT 1 FROM users u WHERE u.id = inp.to_) END AS to_exists,
               c.type, c.mute_all, c.dissolved, c.last_seq, c.fanout,
               uc.role, uc.left_seq, uc.muted_until, uc.peer_id, inp.to_
          -- Each lookup a probe of a primary key, per message, whatever the tables' sizes and
          -- the plan cache's row estimates (OFFSET 0: not flattened into a hash join that
          -- would scan a whole table on every call).
          FROM inp
          LEFT JOIN LATERAL (SELECT k.conv_id, k.seq FROM client_msg_ids k
                              WHERE k.sender_id = inp.sender AND k.client_msg_id = inp.cmid OFFSET 0) k ON true
          LEFT JOIN LATERAL (SELECT dp.conv_id FROM direct_pairs dp
                              WHERE dp.user_lo = inp.lo AND dp.user_hi = inp.hi OFFSET 0) dp ON true
          LEFT JOIN LATERAL (SELECT c.type, c.mute_all, c.dissolved, c.last_seq, c.fanout FROM conversations c
                              WHERE c.id = COALESCE(inp.conv, dp.conv_id) OFFSET 0) c ON true
          LEFT JOIN LATERAL (SELECT uc.role, uc.left_seq, uc.muted_until, uc.peer_id FROM user_conversations uc
                              WHERE uc.user_id = inp.sender AND uc.conv_id = inp.conv OFFSET 0) uc ON true
    ), ranked AS (
        SELECT l.*, dense_rank() OVER (ORDER BY l.sender, l.cmid)::int AS key_no,
               CASE WHEN l.lo IS NOT NULL THEN dense_rank() OVER (ORDER BY l.lo, l.hi)::int END AS pair_no,
               -- existing conversations first, so that their slots are 1..K without gaps
               CASE WHEN l.type IS NOT NULL THEN dense_rank() OVER (ORDER BY l.type IS NULL, l.target_conv)::int END
                   AS slot_no,
               d.o_err AS deny, d.o_msg AS deny_msg
          FROM looked l
          -- only direct sends have someone to be refused by: the recipient, or the peer
          LEFT JOIN LATERAL yim_direct_denial(l.sender, COALESCE(l.to_, l.peer_id)) d
                 ON l.to_ IS NOT NULL OR l.type = 'direct'
    )
    SELECT array_agg(r.key_no ORDER BY r.i), array_agg(r.pair_no ORDER BY r.i), array_agg(r.slot_no ORDER BY r.i),
           array_agg(r.stored_conv ORDER BY r.i), array_agg(r.stored_seq ORDER BY r.i),
           array_agg(r.to_exists ORDER BY r.i), array_agg(r.deny ORDER BY r.i), array_agg(r.deny_msg ORDER BY r.i),
           array_agg(r.type ORDER BY r.i), array_agg(r.mute_all ORDER BY r.i), array_agg(r.dissolved ORDER BY r.i),
           array_agg(r.role ORDER BY r.i), array_agg(r.left_seq ORDER BY r.i), array_agg(r.muted_until ORDER BY r.i),
           array_agg(COALESCE(m.n, 0) ORDER BY r.i), array_agg(COALESCE(m.ok, true) ORDER BY r.i),
           -- one entry per conversation slot (the first message's row stands for its slot)
           array_agg(r.target_conv ORDER BY r.slot_no) FILTER (WHERE r.slot_first),
           array_agg(r.last_seq ORDER BY r.slot_no) FILTER (WHERE r.slot_first),
           array_agg(r.fanout ORDER BY r.slot_no) FILTER (WHERE r.slot_first),
           -- each pair that has a conversation already: its slot
           array_agg(r.pair_no ORDER BY r.pair_no) FILTER (WHERE r.pair_first AND r.slot_no IS NOT NULL),
           array_agg(r.slot_no ORDER BY r.pair_no) FILTER (WHERE r.pair_first AND r.slot_no IS NOT NULL)
      INTO l_key, l_pair, l_slot, l_stored_conv, l_stored_seq, l_to_exists, l_deny, l_deny_msg,
           l_type, l_mute_all, l_dissolved, l_role, l_left, l_muted_until, l_mentions, l_mentions_ok,
           s_conv, s_last, s_fanout, v_known_pairs, v_known_slots
      FROM (SELECT x.*,
                   x.slot_no IS NOT NULL AND row_number() OVER (PARTITION BY x.slot_no ORDER BY x.i) = 1 AS slot_first,
                   x.pair_no IS NOT NULL AND row_number() OVER (PARTITION BY x.pair_no ORDER BY x.i) = 1 AS pair_first
              FROM ranked x) r
      LEFT JOIN ment m ON m.i = r.i;
    v_slots := COALESCE(cardinality(s_conv), 0);
    s_conv := COALESCE(s_conv, '{}'); s_last := COALESCE(s_last, '{}'); s_fanout := COALESCE(s_fanout, '{}');
    FOR j IN 1 .. COALESCE(cardinality(v_known_pairs), 0) LOOP  -- (pair, slot) lists -> pair_slot[pair]
        pair_slot[v_known_pairs[j]] := v_known_slots[j];
    END LOOP;

    FOR i IN 1 .. n LOOP
        -- Idempotency first: a retried client_msg_id returns the original and writes nothing.
        IF l_stored_conv[i] IS NOT NULL THEN
            r_dup[i] := true; r_conv[i] := l_stored_conv[i]; r_seq[i] := l_stored_seq[i];
            CONTINUE;
        END IF;
        v_key := l_key[i];
        v_origin := key_origin[v_key];
        IF v_origin IS NOT NULL THEN  -- the same key earlier in this run, accepted
            r_dup[i] := true; r_conv[i] := r_conv[v_origin]; r_seq[i] := r_seq[v_origin]; r_src[i] := v_origin;
            CONTINUE;
        END IF;

        IF p_to[i] IS NOT NULL THEN
            IF p_to[i] = p_sender[i] THEN
                r_err[i] := 'bad_request'; r_msg[i] := 'cannot send a direct message to yourself'; CONTINUE;
            END IF;
            IF l_mentions[i] > 0 OR p_mention_all[i] THEN
                r_err[i] := 'bad_request'; r_msg[i] := 'mentions are for group messages'; CONTINUE;
            END IF;
            v_pair := l_pair[i];
            v_slot := pair_slot[v_pair];
            r_conv[i] := s_conv[v_slot];
            IF v_slot IS NULL AND NOT l_to_exists[i] THEN
                r_err[i] := 'not_found'; r_msg[i] := format('no user %s', p_to[i]); CONTINUE;
            END IF;
            IF l_deny[i] IS NOT NULL THEN
                r_err[i] := l_deny[i]; r_msg[i] := l_deny_msg[i]; CONTINUE;
            END IF;
            IF v_slot IS NULL THEN  -- the pair's first message opens its conversation
                v_slots := v_slots + 1;
                v_slot := v_slots;
                s_conv[v_slot] := p_new_conv[i]; s_last[v_slot] := 0; s_fanout[v_slot] := 'write';
                pair_slot[v_pair] := v_slot;
                v_opened := v_opened || i;
                v_opened_convs := v_opened_convs || p_new_conv[i];
                r_conv[i] := p_new_conv[i];
            END IF;
        ELSE
            r_conv[i] := p_conv[i];
            v_slot := l_slot[i];
            IF v_slot IS NULL AND p_conv[i] = ANY (v_opened_convs) THEN
                -- Into a conversation this very run opened (its id guessed before the ACK):
                -- phase 1 could not see it. Let the writer run the sends one by one.
                RAISE EXCEPTION 'send into conversation % opened in the same batch', p_conv[i]
                    USING ERRCODE = 'serialization_failure';
            END IF;
            IF l_type[i] = 'service' THEN  -- customer service: the writer runs its Python routing job
                r_err[i] := 'service_conversation'; CONTINUE;
            END IF;
            IF v_slot IS NULL OR l_role[i] IS NULL OR l_left[i] IS NOT NULL THEN
                IF l_dissolved[i] THEN
                    r_err[i] := 'group_dissolved'; r_msg[i] := format('group %s was dissolved', p_conv[i]); CONTINUE;
                END IF;
                r_err[i] := 'not_member';
                r_msg[i] := format('you are not a member of conversation %s', p_conv[i]); CONTINUE;
            END IF;
            IF l_type[i] = 'group' THEN
                IF l_muted_until[i] > p_created[i] THEN
                    r_err[i] := 'muted';
                    r_msg[i] := format('you are muted in this group until %s', l_muted_until[i]); CONTINUE;
                END IF;
                IF l_mute_all[i] AND l_role[i] = 'member' THEN
                    r_err[i] := 'muted'; r_msg[i] := 'the whole group is muted; only the owner and admins may speak';
                    CONTINUE;
                END IF;
                IF p_mention_all[i] AND l_role[i] = 'member' THEN
                    r_err[i] := 'forbidden'; r_msg[i] := 'only the owner and admins may mention everyone'; CONTINUE;
                END IF;
                IF NOT l_mentions_ok[i] THEN
                    r_err[i] := 'bad_request'; r_msg[i] := 'every mentioned user must be a member of the group';
                    CONTINUE;
                END IF;
            ELSE
                IF l_mentions[i] > 0 OR p_mention_all[i] THEN
                    r_err[i] := 'bad_request'; r_msg[i] := 'mentions are for group messages'; CONTINUE;
                END IF;
                IF l_deny[i] IS NOT NULL THEN
                    r_err[i] := l_deny[i]; r_msg[i] := l_deny_msg[i]; CONTINUE;
                END IF;
            END IF;
        END IF;
        -- Accepted: the next seq of its conversation.
        s_last[v_slot] := s_last[v_slot] + 1;
        r_seq[i] := s_last[v_slot];
        r_fanout[i] := s_fanout[v_slot];
        r_src[i] := i;
        key_origin[v_key] := i;
        v_accepted := v_accepted || i;
    END LOOP;

    IF cardinality(v_opened) > 0 THEN
        WITH opened AS (
            SELECT p_sender[o.i] AS sender, p_to[o.i] AS to_, p_new_conv[o.i] AS conv, p_created[o.i] AS created
              FROM unnest(v_opened) AS o(i)
        ), paired AS (
            INSERT INTO direct_pairs (user_lo, user_hi, conv_id)
            SELECT LEAST(sender, to_), GREATEST(sender, to_), conv FROM opened
            ON CONFLICT DO NOTHING RETURNING 1
        ), conv AS (
            INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, member_count)
            SELECT conv, 'direct', created, 0, conv, created, 2 FROM opened
        ), members AS (
            INSERT INTO user_conversations (user_id, conv_id, peer_id)
            SELECT sender, conv, to_ FROM opened UNION ALL SELECT to_, conv, sender FROM opened
        )
        SELECT count(*) INTO v_count FROM paired;
        IF v_count <> cardinality(v_opened) THEN
            -- A first message of the same pair committed meanwhile on another connection (the
            -- prelude's pair lock rules this out): rerun the sends one by one.
            RAISE EXCEPTION 'a direct pair of this batch was opened meanwhile' USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    INSERT INTO client_msg_ids (sender_id, client_msg_id, conv_id, seq)
    SELECT p_sender[a.i], p_cmid[a.i], r_conv[a.i], r_seq[a.i] FROM unnest(v_accepted) AS a(i)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count <> cardinality(v_accepted) THEN
        -- The same (sender, client_msg_id) committed meanwhile on another connection: make
        -- the batch retry; the retry finds it in the idempotency lookup.
        RAISE EXCEPTION 'concurrent send of a client_msg_id of this batch' USING ERRCODE = 'serialization_failure';
    END IF;

    RETURN QUERY
    WITH inp AS (
        SELECT t.i::int AS i, t.msg_id, t.sender, t.device, t.kind, t.body, t.cmid, t.created, t.mention_all,
               t.err, t.msg, t.dup, t.conv, t.seq, t.fanout, t.src
          FROM unnest(p_msg_id, p_sender, p_device, p_kind, p_body, p_cmid, p_created, p_mention_all,
                      r_err, r_msg, r_dup, r_conv, r_seq, r_fanout, r_src)
               WITH ORDINALITY AS t(msg_id, sender, device, kind, body, cmid, created, mention_all,
                                    err, msg, dup, conv, seq, fanout, src, i)
    ), acc AS (  -- the accepted ones (written as "seq and not a duplicate" for the planner's estimate)
        SELECT * FROM inp WHERE inp.seq IS NOT NULL AND NOT inp.dup
    ), ment AS (
        SELECT x.i::int AS i, x.u FROM unnest(p_mention_of, p_mention) AS x(i, u)
    ), ment_list AS (
        SELECT x.i, array_agg(x.u ORDER BY x.j) AS mentions
          FROM unnest(p_mention_of, p_mention) WITH ORDINALITY AS x(i, u, j) GROUP BY x.i
    ), rcpt AS (  -- write fan-out: the conversation's current members get it in their inbox
        SELECT a.i, a.sender, a.conv, a.seq AS conv_seq, a.created, uc.user_id FROM acc a
          JOIN user_conversations uc ON uc.conv_id = a.conv AND uc.left_seq IS NULL
         WHERE a.fanout = 'write'
    ), numbered AS (  -- each inbox's seqs, gap-free, in run order
        SELECT r.i, r.sender, r.conv, r.conv_seq, r.created, r.user_id,
               u.inbox_seq + row_number() OVER (PARTITION BY r.user_id ORDER BY r.i) AS seq
          FROM rcpt r JOIN users u ON u.id = r.user_id
    ), bumped AS (
        UPDATE users u SET inbox_seq = u.inbox_seq + x.n
          FROM (SELECT r.user_id, count(*) AS n FROM rcpt r GROUP BY r.user_id) x
         WHERE u.id = x.user_id
    ), inboxed AS (
        INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, created_at)
        SELECT nb.user_id, nb.seq, 'message', nb.conv, nb.conv_seq, nb.created FROM numbered nb
    ), per_msg AS (
        SELECT nb.i, array_agg(nb.user_id ORDER BY nb.user_id) AS users, array_agg(nb.seq ORDER BY nb.user_id) AS seqs,
               max(nb.seq) FILTER (WHERE nb.user_id = nb.sender) AS sender_seq
          FROM numbered nb GROUP BY nb.i
    ), stored AS (
        INSERT INTO messages (conv_id, seq, msg_id, sender_id, sender_device, kind, body, client_msg_id,
                              sender_inbox_seq, created_at, uncounted, mentions, mention_all)
        SELECT a.conv, a.seq, a.msg_id, a.sender, a.device, a.kind, a.body, a.cmid,
               COALESCE(pm.sender_seq, 0), a.created, false, ml.mentions, a.mention_all
          FROM acc a LEFT JOIN per_msg pm ON pm.i = a.i LEFT JOIN ment_list ml ON ml.i = a.i
    ), heads AS (  -- each conversation ends at its last message of the run
        UPDATE conversations c
           SET last_seq = h.seq, last_msg_id = h.msg_id, updated_at = h.created,
               mention_all_seq = COALESCE(h.mention_all_seq, c.mention_all_seq)
          FROM (SELECT DISTINCT ON (a.conv) a.conv, a.seq, a.msg_id, a.created,
                       max(a.seq) FILTER (WHERE a.mention_all) OVER (PARTITION BY a.conv) AS mention_all_seq
                  FROM acc a ORDER BY a.conv, a.seq DESC) h
         WHERE c.id = h.conv
    ), marks AS (  -- sending reads up to one's own entry; a mention marks the mentioned
        UPDATE user_conversations uc
           SET read_seq = CASE WHEN x.read_seq IS NOT NULL AND uc.left_seq IS NULL THEN x.read_seq ELSE uc.read_seq END,
               mention_seq = COALESCE(x.mention_seq, uc.mention_seq)
          FROM (SELECT y.user_id, y.conv, max(y.read_seq) AS read_seq, max(y.mention_seq) AS mention_seq
                  FROM (SELECT a.sender AS user_id, a.conv, a.seq AS read_seq, NULL::bigint AS mention_seq FROM acc a
                        UNION ALL
                        SELECT m.u, a.conv, NULL, a.seq FROM ment m JOIN acc a ON a.i = m.i) y
                 GROUP BY y.user_id, y.conv) x
         WHERE uc.user_id = x.user_id AND uc.conv_id = x.conv
    )
    SELECT o.err, o.msg, o.dup, COALESCE(m.conv_id, o.conv), COALESCE(m.seq, o.seq),
           CASE WHEN m.conv_id IS NOT NULL THEN m.sender_inbox_seq
                WHEN o.src IS NOT NULL THEN COALESCE(pm.sender_seq, 0) END,
           CASE WHEN NOT o.dup THEN o.fanout END,
           CASE WHEN o.src = o.i THEN COALESCE(pm.users, '{}') END,
           CASE WHEN o.src = o.i THEN COALESCE(pm.seqs, '{}') END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.msg_id WHEN o.dup THEN s.msg_id END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.sender_device WHEN o.dup THEN s.device END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.kind WHEN o.dup THEN s.kind END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.body WHEN o.dup THEN s.body END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.created_at WHEN o.dup THEN s.created END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.recalled WHEN o.dup THEN false END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.mentions WHEN o.dup THEN sl.mentions END,
           CASE WHEN m.conv_id IS NOT NULL THEN m.mention_all WHEN o.dup THEN s.mention_all END
      FROM inp o
      LEFT JOIN inp s ON s.i = o.src
      LEFT JOIN per_msg pm ON pm.i = o.src
      LEFT JOIN ment_list sl ON sl.i = o.src
      -- a duplicate of an earlier send: the stored message (the run's own are not visible here)
      LEFT JOIN LATERAL (SELECT m.* FROM messages m
                          WHERE o.dup AND o.src IS NULL AND m.conv_id = o.conv AND m.seq = o.seq OFFSET 0) m ON true
     ORDER BY o.i;
END $$;
