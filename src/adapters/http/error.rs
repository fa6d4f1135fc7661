//! One error type for the API: RFC 9457 problem+json with a stable `code` from a closed enum.
//! 5xx details are logged, never sent.

use crate::domain::budget;
use crate::domain::{DomainError, Refusal};
use crate::store::queries::QueryError;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cqrs_es::AggregateError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every code the API answers with. Stable: clients branch on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No or malformed bearer token.
    Unauthorized,
    /// The bearer token expired.
    TokenExpired,
    /// The token's roles do not allow this route.
    Forbidden,
    /// No such route or resource.
    NotFound,
    /// No such vehicle (or not in the caller's scope).
    VehicleNotFound,
    /// No such device.
    DeviceNotFound,
    /// No such command (or not the caller's).
    CommandNotFound,
    /// The VIN is already registered.
    VehicleExists,
    /// The device id is taken or already fitted.
    DeviceExists,
    /// The device is not fitted to this vehicle.
    DeviceNotAttached,
    /// The device was replaced or revoked.
    DeviceRetired,
    /// Not a valid ISO 3779 VIN.
    InvalidVin,
    /// The body is not JSON.
    InvalidJson,
    /// A JSON document or value is nested deeper than the budget (32 levels).
    TooDeep,
    /// The JSON does not match the schema (missing, unknown or mistyped fields).
    InvalidBody,
    /// Bad query string.
    InvalidQuery,
    /// The body exceeds the size limit.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// A field value is out of its range.
    ValidationFailed,
    /// Consent purpose outside the catalogue.
    UnknownPurpose,
    /// Command name outside the catalogue.
    UnknownCommand,
    /// Command parameters, timeout or TTL out of range.
    InvalidParameters,
    /// No consent in force for the requester (the rejection is recorded).
    ConsentMissing,
    /// The vehicle is not active (the rejection is recorded).
    VehicleNotActive,
    /// Same idempotency key, different request.
    IdempotencyConflict,
    /// The command can no longer be canceled.
    CommandNotCancelable,
    /// The lifecycle does not allow this move.
    InvalidTransition,
    /// A page token this server did not make.
    BadPageToken,
    /// Concurrent writers kept colliding.
    Conflict,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// A dependency (database) is unavailable, or the server is full.
    Unavailable,
    /// The caller holds as many long-lived requests (event streams, long polls) as it may.
    TooManyRequests,
    /// The request took longer than the server allows.
    RequestTimeout,
    /// An unexpected server error.
    Internal,
}

impl From<Refusal> for ErrorCode {
    /// Every refusal has its code (and so its status): no wildcard, so a new refusal does not
    /// compile until it is mapped here.
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::VehicleExists => Self::VehicleExists,
            Refusal::VehicleNotFound => Self::VehicleNotFound,
            Refusal::InvalidTransition => Self::InvalidTransition,
            Refusal::ValidationFailed => Self::ValidationFailed,
            Refusal::DeviceExists => Self::DeviceExists,
            Refusal::DeviceNotAttached => Self::DeviceNotAttached,
            Refusal::DeviceNotFound => Self::DeviceNotFound,
            Refusal::DeviceRetired => Self::DeviceRetired,
            Refusal::UnknownPurpose => Self::UnknownPurpose,
            Refusal::UnknownCommand => Self::UnknownCommand,
            Refusal::InvalidParameters => Self::InvalidParameters,
            Refusal::CommandExists => Self::Conflict,
            Refusal::CommandNotFound => Self::CommandNotFound,
            Refusal::CommandNotCancelable => Self::CommandNotCancelable,
            // Moves of the clock and of vehicles; should one ever come through HTTP, it is the
            // caller's move the state does not allow, or an answer that is not the caller's to give.
            Refusal::DeadlineNotReached => Self::InvalidTransition,
            Refusal::WrongVehicle => Self::Forbidden,
            Refusal::Unavailable => Self::Unavailable,
            Refusal::WebhookExists => Self::Conflict,
            Refusal::WebhookNotFound => Self::NotFound,
        }
    }
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::TokenExpired => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ConsentMissing => StatusCode::FORBIDDEN,
            Self::NotFound | Self::VehicleNotFound | Self::DeviceNotFound | Self::CommandNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::VehicleExists
            | Self::DeviceExists
            | Self::DeviceRetired
            | Self::IdempotencyConflict
            | Self::CommandNotCancelable
            | Self::InvalidTransition
            | Self::VehicleNotActive
            | Self::DeviceNotAttached
            | Self::Conflict => StatusCode::CONFLICT,
            Self::InvalidJson | Self::InvalidQuery | Self::BadPageToken => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidVin
            | Self::InvalidBody
            | Self::TooDeep
            | Self::ValidationFailed
            | Self::UnknownPurpose
            | Self::UnknownCommand
            | Self::InvalidParameters => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable content",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            _ => "Internal server error",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI of the problem type (`urn:tacho:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the HTTP status.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for humans.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// The command the refusal was recorded on, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
}

/// The error every handler returns.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    command_id: Option<Uuid>,
}

impl ApiError {
    /// An error with a code and a detail for the client.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), command_id: None }
    }

    /// Attaches the id of the command the refusal was recorded on.
    pub fn with_command(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// An unexpected failure: logged here, sent as a generic 500.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(ErrorCode::Internal, "an unexpected error occurred; it has been logged")
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let code_name = serde_json::to_value(self.code).ok().and_then(|v| v.as_str().map(str::to_owned));
        let problem = Problem {
            kind: format!("urn:tacho:problem:{}", code_name.unwrap_or_default()),
            title: self.code.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail,
            code: self.code,
            command_id: self.command_id,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl<E: DomainError> From<AggregateError<E>> for ApiError {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(e) => {
                let code = ErrorCode::from(e.refusal());
                match code {
                    ErrorCode::Unavailable => {
                        tracing::error!(error = %e, "precondition lookup failed");
                        Self::new(code, "a dependency is unavailable; retry later")
                    }
                    _ => Self::new(code, e.to_string()),
                }
            }
            AggregateError::AggregateConflict => {
                Self::new(ErrorCode::Conflict, "too many concurrent changes to this resource; retry")
            }
            AggregateError::DatabaseConnectionError(e) => {
                tracing::error!(error = %e, "database unavailable");
                Self::new(ErrorCode::Unavailable, "the database is unavailable; retry later")
            }
            other => Self::internal(other),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::BadPageToken => Self::new(ErrorCode::BadPageToken, "page_token is not valid"),
            QueryError::Database(e) => Self::from(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match crate::store::is_transient(&error) {
            true => {
                tracing::error!(error = %error, "database unavailable");
                Self::new(ErrorCode::Unavailable, "the database is unavailable; retry later")
            }
            false => Self::internal(error),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::new(ErrorCode::InvalidBody, e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::new(ErrorCode::InvalidJson, e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(ErrorCode::UnsupportedMediaType, UNSUPPORTED),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Json::<()>::too_large(),
            other => Self::new(ErrorCode::InvalidJson, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(ErrorCode::InvalidQuery, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(ErrorCode::NotFound, rejection.body_text())
    }
}

/// A JSON body, refused with an [`ApiError`]: not `application/json` (415), over the body limit
/// (413), nested deeper than [`budget::MAX_DEPTH`] (422 `too_deep`, checked on the text before it
/// is parsed), malformed (400) or not of the schema (422).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, UNSUPPORTED));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(),
            _ => ApiError::new(ErrorCode::InvalidJson, e.body_text()),
        })?;
        budget::check_text(&bytes).map_err(|e| ApiError::new(ErrorCode::TooDeep, e.to_string()))?;
        // PostgreSQL stores no NUL in text or jsonb: refused here, not as a 500 at the database.
        if bytes.contains(&0) || bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return Err(ApiError::new(ErrorCode::InvalidBody, "the body holds a NUL character"));
        }
        Ok(Self(axum::Json::<T>::from_bytes(&bytes)?.0))
    }
}

impl<T> Json<T> {
    fn too_large() -> ApiError {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("the body exceeds {} KiB", super::BODY_LIMIT / 1024))
    }
}

const UNSUPPORTED: &str = "send the body as Content-Type: application/json";

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
