//! HTTP errors: every domain error maps to a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}` in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::inference;
use crate::state::MAX_BODY_BYTES;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What was wrong, naming the input.
    pub message: String,
}

impl AppError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// A 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }

    /// A 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::CONFLICT,
            code,
            message: message.into(),
        }
    }

    /// A 413: the request asks for more than one request may.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: message.into(),
        }
    }

    /// A 422: the request is well-formed but cannot be answered as asked.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
        }
    }

    /// A 503 with `Retry-After`: the server sheds load rather than queue
    /// without bound.
    pub fn overloaded(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "overloaded",
            message: message.into(),
        }
    }

    /// A 401: a route that needs a token, called without a known one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }

    /// A 403: a known caller without the role the route needs.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
        }
    }

    /// A 500: a fault of the server, not of the request.
    pub fn tier_unavailable(message: impl Into<String>) -> Self {
        AppError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "online_tier_unavailable",
            message: message.into(),
        }
    }

    /// A 500: a fault of the server (the message says which).
    pub fn internal(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

/// The code of an error answer, left in the response's extensions for the
/// metrics middleware to count.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Seconds a shed request is asked to wait before retrying.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aurum\""),
            );
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<feature_store::Error> for AppError {
    fn from(e: feature_store::Error) -> Self {
        use feature_store::Error as E;
        let message = e.to_string();
        match e {
            E::UnknownFeature(_) => AppError::bad_request("unknown_feature", message),
            E::Schema { .. } => AppError::bad_request("invalid_features", message),
            E::Parse { .. } | E::DeltaSource { .. } => {
                AppError::bad_request("unparseable_input", message)
            }
            E::InvalidPush { .. } => AppError::bad_request("invalid_push", message),
            E::InvalidSpine { .. } => AppError::bad_request("invalid_spine", message),
            E::InvalidRequest(_) => AppError::bad_request("invalid_request", message),
            E::NoOfflineStore { .. } => AppError::not_found("no_offline_store", message),
            E::OfflineWrite { .. } => AppError::bad_request("offline_write_failed", message),
            E::Delta(e) => (*e).into(),
            E::OnlineTier { .. } => AppError::tier_unavailable(message),
            E::OnlineTierValue { .. } => AppError {
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                code: "online_tier_bad_value",
                message,
            },
            E::QualityGate { .. } => AppError {
                status: axum::http::StatusCode::CONFLICT,
                code: "quality_gate",
                message,
            },
            E::Polars { .. }
            | E::Io { .. }
            | E::Project { .. }
            | E::ProjectMissing(_)
            | E::Internal(_) => AppError::internal(message),
        }
    }
}

impl From<delta::Error> for AppError {
    fn from(e: delta::Error) -> Self {
        use delta::Error as E;
        let message = e.to_string();
        match e {
            E::UnknownColumn { .. } => AppError::bad_request("invalid_features", message),
            E::TableMissing(_) => AppError::not_found("table_missing", message),
            E::SchemaChange { .. } => AppError::bad_request("schema_change", message),
            E::Conflict { .. } => AppError::conflict("commit_conflict", message),
            E::Polars { .. }
            | E::Delta { .. }
            | E::Arrow { .. }
            | E::Io { .. }
            | E::Storage { .. }
            | E::Protocol { .. }
            | E::Internal(_) => AppError::internal(message),
        }
    }
}

impl From<registry::Error> for AppError {
    fn from(e: registry::Error) -> Self {
        use registry::Error as E;
        let message = e.to_string();
        match e {
            E::ModelNotFound(_) | E::VersionNotFound { .. } => {
                AppError::not_found("model_not_found", message)
            }
            E::InvalidName(_) => AppError::bad_request("invalid_model_name", message),
            E::InvalidModel { .. } | E::SignatureMismatch { .. } => {
                AppError::bad_request("invalid_model", message)
            }
            E::AliasNotFound { .. } => AppError::not_found("alias_not_found", message),
            E::ModelExists(_) => AppError::conflict("model_exists", message),
            E::VersionAliased { .. } | E::ModelAliased { .. } => {
                AppError::conflict("aliased", message)
            }
            E::NothingToRollBack { .. } => AppError::conflict("nothing_to_roll_back", message),
            E::InvalidParameter(_) => AppError::bad_request("invalid_parameter", message),
            E::Mlflow { .. } => AppError {
                status: StatusCode::BAD_GATEWAY,
                code: "mlflow_unavailable",
                message,
            },
            E::RuntimeMissing { .. }
            | E::Corrupt { .. }
            | E::Io { .. }
            | E::Storage { .. }
            | E::Metadata { .. } => AppError::internal(message),
        }
    }
}

impl From<inference::Error> for AppError {
    fn from(e: inference::Error) -> Self {
        use crate::inference::Error as E;
        let message = e.to_string();
        match e {
            E::ModelNotServed { .. } => AppError::not_found("model_not_found", message),
            E::NoFeatureList { .. } => AppError::bad_request("no_feature_list", message),
            E::UnknownFeature { .. } => AppError::bad_request("unknown_feature", message),
            E::FeatureValueOutOfRange { .. } | E::FeatureValueNotNumber { .. } => {
                AppError::bad_request("invalid_feature_value", message)
            }
            E::MissingEntityKey { .. } => AppError::bad_request("missing_entity_key", message),
            E::InvalidEntityKey(_) => AppError::bad_request("invalid_entity_key", message),
            E::MissingFeatures { .. } => AppError::unprocessable("missing_features", message),
            E::QueueFull => AppError::overloaded(message),
            E::OnlineTierUnavailable { .. } => AppError::tier_unavailable(message),
            // The model's feature list and graph come from the registry:
            // what goes wrong past the request's own values is a fault of
            // the deployment or the server, not of the caller.
            E::ViewNotOnline { .. }
            | E::LookupFailed { .. }
            | E::NonNumericFeature { .. }
            | E::InputShape { .. }
            | E::NoFloatOutput
            | E::Runtime { .. }
            | E::OutputShape { .. }
            | E::QueueClosed => AppError::internal(message),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        AppError {
            status: e.status(),
            code: "invalid_json",
            message: e.body_text(),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for AppError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let status = e.status();
        AppError {
            status,
            code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid_request"
            },
            message: format!("{} (the limit is {} bytes)", e.body_text(), MAX_BODY_BYTES),
        }
    }
}
