-- Webhook subscriptions (src/webhooks): the read model of the Webhook aggregate, the signing
-- secrets (kept out of the log: the log is never edited, a secret must be deletable), where each
-- subscription's deliveries stand in the log, and its recent attempts.
CREATE TABLE rm_webhooks
(
    webhook_id      uuid PRIMARY KEY,
    principal       text        NOT NULL,
    endpoint        text        NOT NULL,
    topics          jsonb       NOT NULL,
    vins            jsonb       NOT NULL,
    purpose         text,
    status          text        NOT NULL,
    pause           jsonb,
    secret          text        NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL
);
CREATE INDEX rm_webhooks_principal ON rm_webhooks (principal, created_at, webhook_id);

CREATE TABLE webhook_secrets
(
    webhook_id  uuid        NOT NULL,
    fingerprint text        NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (webhook_id, fingerprint)
);

-- Where each subscription's deliveries stand in the log (commit order), written after each batch
-- its endpoint took; a replay moves it back and raises `generation`, so a worker's write of a batch
-- it sent before the replay does not undo it.
CREATE TABLE webhook_cursors
(
    webhook_id uuid PRIMARY KEY,
    tx_id      bigint      NOT NULL,
    position   bigint      NOT NULL,
    generation bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL
);

-- The latest attempts per subscription (100 kept).
CREATE TABLE webhook_deliveries
(
    attempt_no      bigserial PRIMARY KEY,
    webhook_id      uuid        NOT NULL,
    attempted_at    timestamptz NOT NULL,
    ok              boolean     NOT NULL,
    response_status bigint,
    latency_ms      bigint      NOT NULL,
    events          bigint      NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    error           text
);
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook_id, attempt_no);
