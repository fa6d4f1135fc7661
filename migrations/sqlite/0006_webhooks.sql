-- Webhook subscriptions (src/webhooks): the read model of the Webhook aggregate and the signing
-- secrets (kept out of the log: the log is never edited, a secret must be deletable).
CREATE TABLE rm_webhooks
(
    webhook_id      blob PRIMARY KEY,
    principal       text    NOT NULL,
    endpoint        text    NOT NULL,
    topics          text    NOT NULL,
    vins            text    NOT NULL,
    purpose         text,
    status          text    NOT NULL,
    pause           text,
    secret          text    NOT NULL,
    previous_secret text,
    previous_until  text,
    created_at      text    NOT NULL,
    updated_at      text    NOT NULL,
    version         integer NOT NULL
);
CREATE INDEX rm_webhooks_principal ON rm_webhooks (principal, created_at, webhook_id);

CREATE TABLE webhook_secrets
(
    webhook_id  blob NOT NULL,
    fingerprint text NOT NULL,
    secret      text NOT NULL,
    created_at  text NOT NULL,
    PRIMARY KEY (webhook_id, fingerprint)
);

-- Where each subscription's deliveries stand in the log, written after each batch its endpoint took;
-- a replay moves it back and raises `generation`.
CREATE TABLE webhook_cursors
(
    webhook_id blob PRIMARY KEY,
    tx_id      integer NOT NULL,
    position   integer NOT NULL,
    generation integer NOT NULL DEFAULT 0,
    updated_at text    NOT NULL
);

-- The latest attempts per subscription (100 kept).
CREATE TABLE webhook_deliveries
(
    attempt_no      integer PRIMARY KEY AUTOINCREMENT,
    webhook_id      blob    NOT NULL,
    attempted_at    text    NOT NULL,
    ok              boolean NOT NULL,
    response_status integer,
    latency_ms      integer NOT NULL,
    events          integer NOT NULL,
    first_position  integer NOT NULL,
    last_position   integer NOT NULL,
    error           text
);
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook_id, attempt_no);
