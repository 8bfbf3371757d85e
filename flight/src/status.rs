//! Errors of the feature store and the Delta layer as gRPC statuses.

use tonic::Status;

use feature_store::error::Error;

/// Maps a feature-store error to a gRPC status.
pub(crate) fn status(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::InvalidPush { .. }
        | Error::Schema { .. }
        | Error::InvalidSpine { .. }
        | Error::InvalidRequest(_) => Status::invalid_argument(message),
        Error::UnknownFeature(_) | Error::NoOfflineStore { .. } => Status::not_found(message),
        Error::OfflineWrite { .. } | Error::QualityGate { .. } => {
            Status::failed_precondition(message)
        }
        Error::Delta(e) => delta_status(*e),
        Error::OnlineTier { .. } => Status::unavailable(message),
        Error::Polars { .. }
        | Error::Project { .. }
        | Error::ProjectMissing(_)
        | Error::Parse { .. }
        | Error::DeltaSource { .. }
        | Error::Internal(_)
        | Error::OnlineTierValue { .. }
        | Error::Io { .. } => Status::internal(message),
    }
}

/// Maps a Delta layer error to a gRPC status.
pub(crate) fn delta_status(e: delta::Error) -> Status {
    let message = e.to_string();
    match e {
        delta::Error::UnknownColumn { .. } | delta::Error::SchemaChange { .. } => {
            Status::invalid_argument(message)
        }
        delta::Error::TableMissing(_) => Status::not_found(message),
        delta::Error::Storage { .. } => Status::unavailable(message),
        delta::Error::Protocol { .. } => Status::failed_precondition(message),
        delta::Error::Conflict { .. } => Status::aborted(message),
        delta::Error::Polars { .. }
        | delta::Error::Delta { .. }
        | delta::Error::Arrow { .. }
        | delta::Error::Internal(_)
        | delta::Error::Io { .. } => Status::internal(message),
    }
}

pub(crate) fn not_served(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not served by aurum's Flight service yet; DoPut (push) is"
    ))
}
