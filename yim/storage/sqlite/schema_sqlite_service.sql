-- Customer service (客服): shops, their agents, and service sessions routed to agents.
CREATE TABLE IF NOT EXISTS shops (
    id         INTEGER PRIMARY KEY,            -- Snowflake
    name       TEXT    NOT NULL,
    owner_id   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS shop_agents (
    shop_id          INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    role             TEXT    NOT NULL DEFAULT 'agent',  -- 'agent' | 'admin' (supervisor: sees all)
    skills           TEXT    NOT NULL DEFAULT '[]',     -- JSON list, e.g. ["pre_sale","after_sale"]
    capacity         INTEGER NOT NULL DEFAULT 10,       -- max concurrent open sessions
    status           TEXT    NOT NULL DEFAULT 'online', -- what the agent set: online|busy|away|offline
    last_assigned_at INTEGER NOT NULL DEFAULT 0,        -- round-robin among equally busy agents
    added_at         INTEGER NOT NULL,
    PRIMARY KEY (shop_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shop_agents_user ON shop_agents (user_id, shop_id);

-- The customer's one conversation with a shop (whichever agents serve it over time).
CREATE TABLE IF NOT EXISTS service_pairs (
    shop_id     INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    conv_id     INTEGER NOT NULL,
    PRIMARY KEY (shop_id, customer_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS service_pairs_conv ON service_pairs (conv_id);

CREATE TABLE IF NOT EXISTS service_sessions (
    id          INTEGER PRIMARY KEY,           -- Snowflake
    shop_id     INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    conv_id     INTEGER NOT NULL,
    category    TEXT    NOT NULL,              -- the skill it needs: 'pre_sale' | 'after_sale' | ...
    status      TEXT    NOT NULL,              -- 'queued' | 'active' | 'closed'
    agent_id    INTEGER,                       -- while active
    last_agent_id INTEGER,                     -- who served it last (stickiness, ratings)
    queued_at   INTEGER NOT NULL,              -- FIFO order of the queue (kept across re-routing)
    assigned_at INTEGER,
    closed_at   INTEGER,
    rating      INTEGER,
    comment     TEXT,
    -- the conversation head when the session opened: the serving agent's read marker
    -- starts there, so what the customer wrote in this session is unread for them
    open_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS service_sessions_queue ON service_sessions (shop_id, status, queued_at, id);
CREATE INDEX IF NOT EXISTS service_sessions_agent ON service_sessions (agent_id, status);
CREATE INDEX IF NOT EXISTS service_sessions_conv ON service_sessions (conv_id, status);
CREATE INDEX IF NOT EXISTS service_sessions_customer ON service_sessions (shop_id, customer_id, id);

