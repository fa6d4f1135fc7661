-- Read models, each written only by its subscriber together with that subscriber's checkpoint.
CREATE TABLE rm_vehicles
(
    vin             text PRIMARY KEY,
    status          text        NOT NULL,
    model           text        NOT NULL,
    model_year      integer     NOT NULL,
    market          text        NOT NULL,
    options         jsonb       NOT NULL,
    data_collection jsonb       NOT NULL,
    devices         jsonb       NOT NULL DEFAULT '[]',
    connected       boolean     NOT NULL DEFAULT false,
    connection_since timestamptz,
    last_seen       timestamptz,
    registered_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL
);
CREATE INDEX rm_vehicles_status ON rm_vehicles (status, vin);
CREATE INDEX rm_vehicles_market ON rm_vehicles (market, vin);

CREATE TABLE rm_devices
(
    device_id              text PRIMARY KEY,
    vin                    text        NOT NULL,
    kind                   text        NOT NULL,
    status                 text        NOT NULL,
    certificate_thumbprint text        NOT NULL,
    client_id              text,
    allowed_topics         jsonb       NOT NULL DEFAULT '[]',
    replaces               text,
    replaced_by            text,
    registered_at          timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    version                bigint      NOT NULL
);
CREATE INDEX rm_devices_vin ON rm_devices (vin);

CREATE TABLE rm_consents
(
    vin         text        NOT NULL,
    subject     text        NOT NULL,
    purpose     text        NOT NULL,
    status      text        NOT NULL,
    version     bigint      NOT NULL,
    legal_basis text        NOT NULL,
    expires_at  timestamptz,
    granted_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    PRIMARY KEY (vin, subject, purpose)
);

CREATE TABLE rm_commands
(
    command_id        uuid PRIMARY KEY,
    vin               text        NOT NULL,
    name              text        NOT NULL,
    params            jsonb       NOT NULL,
    status            text        NOT NULL,
    requester         text        NOT NULL,
    idempotency_key   text,
    consent_version   bigint,
    timeout_s         bigint      NOT NULL,
    store_and_forward boolean     NOT NULL,
    ttl_s             bigint      NOT NULL,
    requested_at      timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    result            jsonb,
    error             jsonb,
    transitions       jsonb       NOT NULL DEFAULT '[]',
    late_answers      jsonb       NOT NULL DEFAULT '[]',
    version           bigint      NOT NULL
);
CREATE INDEX rm_commands_vin ON rm_commands (vin, requested_at DESC, command_id DESC);
