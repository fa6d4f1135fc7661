//! The rows of the read models as they are read back ([`super::queries`]), in the shapes the API
//! returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A device fitted to a vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRef {
    /// Device id.
    pub device_id: String,
    /// Kind (tcu, infotainment ...).
    pub kind: String,
}

/// A vehicle's connection as last reported over MQTT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ConnectionView {
    /// Whether the vehicle is connected.
    pub connected: bool,
    /// Since when it is in that state.
    #[sqlx(rename = "connection_since")]
    pub since: Option<DateTime<Utc>>,
    /// When tacho last heard from it.
    pub last_seen: Option<DateTime<Utc>>,
}

/// The registry view of a vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct VehicleView {
    /// VIN.
    #[schema(example = "1HGCM82633A004352")]
    pub vin: String,
    /// registered, active, suspended or decommissioned.
    #[schema(example = "active")]
    pub status: String,
    /// Model name.
    pub model: String,
    /// Model year.
    pub model_year: i32,
    /// Market code.
    pub market: String,
    /// Factory options.
    #[sqlx(json)]
    pub options: Vec<String>,
    /// Data-collection configuration.
    #[schema(value_type = Object)]
    pub data_collection: Value,
    /// Devices fitted.
    #[sqlx(json)]
    pub devices: Vec<DeviceRef>,
    /// Connection state.
    #[sqlx(flatten)]
    pub connection: ConnectionView,
    /// When registered.
    pub registered_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A device in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct DeviceView {
    /// Device id.
    pub device_id: String,
    /// VIN of its vehicle.
    pub vin: String,
    /// Kind.
    pub kind: String,
    /// registered, provisioned, active, replaced or revoked.
    pub status: String,
    /// SHA-256 certificate thumbprint, lowercase hex.
    pub certificate_thumbprint: String,
    /// Broker client id.
    pub client_id: Option<String>,
    /// Topic filters it may use.
    #[sqlx(json)]
    pub allowed_topics: Vec<String>,
    /// Device this one replaced.
    pub replaces: Option<String>,
    /// Device that replaced this one.
    pub replaced_by: Option<String>,
    /// When registered.
    pub registered_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A consent of one subject for one purpose on one vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ConsentView {
    /// VIN.
    pub vin: String,
    /// User or service id.
    pub subject: String,
    /// Purpose.
    #[schema(example = "remote_commands")]
    pub purpose: String,
    /// granted or revoked.
    pub status: String,
    /// Version of the last change (written into the events it allowed).
    pub version: i64,
    /// Legal basis.
    pub legal_basis: String,
    /// End of validity.
    pub expires_at: Option<DateTime<Utc>>,
    /// When granted.
    pub granted_at: DateTime<Utc>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who gave it (the subject, or an owner for a service); null for grants recorded before tacho
    /// kept it and not yet refilled.
    pub granted_by: Option<String>,
}

/// One step of a command's lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// Status reached.
    pub status: String,
    /// When tacho recorded it.
    pub at: DateTime<Utc>,
}

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandErrorView {
    /// Stable code (consent_missing, vehicle_not_active, vehicle_offline, timed_out ... or the vehicle's).
    pub code: String,
    /// Explanation.
    pub message: Option<String>,
    /// tacho or vehicle.
    pub by: String,
}

/// A remote command and its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct CommandView {
    /// Command id.
    pub command_id: Uuid,
    /// VIN.
    pub vin: String,
    /// Catalogue name.
    #[schema(example = "lock_doors")]
    pub name: String,
    /// Parameters.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Current status.
    #[schema(example = "succeeded")]
    pub status: String,
    /// Who asked.
    pub requester: String,
    /// Consent version that allowed it.
    pub consent_version: Option<i64>,
    /// Seconds to wait for a final answer.
    pub timeout_s: i64,
    /// Queued while the vehicle is offline.
    pub store_and_forward: bool,
    /// Queue time to live in seconds.
    pub ttl_s: i64,
    /// When requested.
    pub requested_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Every transition, oldest first.
    #[sqlx(json)]
    pub transitions: Vec<Transition>,
    /// The vehicle's result on success.
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Value>,
    /// Why it did not succeed.
    #[sqlx(json(nullable))]
    pub error: Option<CommandErrorView>,
    /// Final answers that arrived after the command ended (recorded, not applied).
    #[schema(value_type = Vec<Object>)]
    #[sqlx(json)]
    pub late_answers: Vec<Value>,
}

/// A page of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Token of the next page; null on the last page.
    pub next_page_token: Option<String>,
}

/// A webhook subscription (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct WebhookView {
    /// Id.
    #[sqlx(rename = "webhook_id")]
    pub subscription_id: Uuid,
    /// Who subscribed: the consent subject vehicle data is delivered under.
    pub principal: String,
    /// Where deliveries go.
    pub endpoint: String,
    /// What is delivered.
    #[schema(example = json!(["vehicle.event", "command"]))]
    #[sqlx(json, rename = "topics")]
    pub event_types: Vec<String>,
    /// Only these vehicles (empty: every vehicle whose owner granted the purpose).
    #[sqlx(json)]
    pub vins: Vec<String>,
    /// The consent purpose vehicle data is delivered under.
    pub purpose: Option<String>,
    /// `active`, `paused` or `deleted`.
    pub status: String,
    /// Why it is paused: `{"reason": "requested", "by": ...}` or `{"reason": "failing", "failures":
    /// ..., "last_error": ...}`.
    #[schema(value_type = Option<Object>)]
    #[sqlx(json(nullable))]
    pub pause: Option<Value>,
    /// First 16 hex digits of the SHA-256 of the signing secret in force (never the secret).
    #[sqlx(rename = "secret")]
    pub secret_fingerprint: String,
    /// Until when the previous secret also signs, after a rotation.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One attempt to deliver a batch to a subscription's endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    /// When it was made.
    pub attempted_at: DateTime<Utc>,
    /// Whether the endpoint took the batch (a 2xx answer).
    pub ok: bool,
    /// The endpoint's HTTP status, when it answered.
    pub response_status: Option<i64>,
    /// From the request to the answer (or the failure).
    pub latency_ms: i64,
    /// Events in the batch.
    pub events: i64,
    /// Log position of its first event.
    pub first_position: i64,
    /// Log position of its last event.
    pub last_position: i64,
    /// What went wrong (timeout, refused address, status, redirect ...).
    pub error: Option<String>,
}
