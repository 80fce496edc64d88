-- Migration 0003: customer service (客服), mirroring schema_sqlite_service.sql: shops,
-- their agents, and service sessions routed to agents. Keyed by shop (the routing unit:
-- every routing decision locks its shop's row), except service_pairs, keyed like
-- direct_pairs by the pair it maps to a conversation.

CREATE TABLE shops (
    id         bigint PRIMARY KEY,
    name       text   NOT NULL,
    owner_id   bigint NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE shop_agents (
    shop_id          bigint  NOT NULL,
    user_id          bigint  NOT NULL,
    role             text    NOT NULL DEFAULT 'agent',
    skills           text    NOT NULL DEFAULT '[]',
    capacity         integer NOT NULL DEFAULT 10,
    status           text    NOT NULL DEFAULT 'online',
    last_assigned_at bigint  NOT NULL DEFAULT 0,
    added_at         bigint  NOT NULL,
    PRIMARY KEY (shop_id, user_id)
);
CREATE INDEX shop_agents_user ON shop_agents (user_id, shop_id);

CREATE TABLE service_pairs (
    shop_id     bigint NOT NULL,
    customer_id bigint NOT NULL,
    conv_id     bigint NOT NULL,
    PRIMARY KEY (shop_id, customer_id)
);
CREATE UNIQUE INDEX service_pairs_conv ON service_pairs (conv_id);

CREATE TABLE service_sessions (
    id            bigint  PRIMARY KEY,
    shop_id       bigint  NOT NULL,
    customer_id   bigint  NOT NULL,
    conv_id       bigint  NOT NULL,
    category      text    NOT NULL,
    status        text    NOT NULL,
    agent_id      bigint,
    last_agent_id bigint,
    queued_at     bigint  NOT NULL,
    assigned_at   bigint,
    closed_at     bigint,
    rating        integer,
    comment       text,
    open_seq      bigint  NOT NULL DEFAULT 0
);
CREATE INDEX service_sessions_queue ON service_sessions (shop_id, status, queued_at, id);
CREATE INDEX service_sessions_agent ON service_sessions (agent_id, status);
CREATE INDEX service_sessions_conv ON service_sessions (conv_id, status);
CREATE INDEX service_sessions_customer ON service_sessions (shop_id, customer_id, id);
