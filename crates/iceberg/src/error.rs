//! The catalog's errors, answered in the Iceberg REST specification's form:
//! `{"error": {"message": ..., "type": ..., "code": ...}}`.

use http::{Response, StatusCode};
use serde_json::json;

use lakegate_core::gate::GateError;
use lakegate_net::http::{self as h, Body};

use super::files::FileError;
use super::metadata::MetadataError;
use super::state::StateError;

/// Why a catalog call failed; each maps to the spec's exception type and status.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("namespace {0} does not exist")]
    NoSuchNamespace(String),
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("namespace {0} is not empty")]
    NamespaceNotEmpty(String),
    #[error("{0}")]
    CommitFailed(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl IcebergError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::NoSuchNamespace(_) | Self::NoSuchTable(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists(_) | Self::NamespaceNotEmpty(_) | Self::CommitFailed(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The spec's exception type.
    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequestException",
            Self::Unauthorized(_) => "NotAuthorizedException",
            Self::Forbidden(_) => "ForbiddenException",
            Self::NotFound(_) => "NotFoundException",
            Self::NoSuchNamespace(_) => "NoSuchNamespaceException",
            Self::NoSuchTable(_) => "NoSuchTableException",
            Self::MethodNotAllowed(_) => "MethodNotAllowedException",
            Self::AlreadyExists(_) => "AlreadyExistsException",
            Self::NamespaceNotEmpty(_) => "NamespaceNotEmptyException",
            Self::CommitFailed(_) => "CommitFailedException",
            Self::Unprocessable(_) => "UnprocessableEntityException",
            Self::Unavailable(_) => "ServiceUnavailableException",
            Self::Internal(_) => "ServerErrorException",
        }
    }

    /// The error response.
    pub fn response(&self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let body = json!({"error": {"message": self.to_string(), "type": self.kind(), "code": status.as_u16()}});
        h::json(status, &body, request_id)
    }
}

impl From<GateError> for IcebergError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Identity(e) => Self::Unauthorized(format!("invalid token: {e}")),
            GateError::Denied(_) => Self::Forbidden("no policy permits this".into()),
            GateError::NotGrantable(reason) => Self::Forbidden(reason),
            GateError::Policy(e) => Self::Internal(format!("policy: {e}")),
            GateError::Exchange(e) => Self::BadRequest(e.to_string()),
            GateError::Audit(e) => {
                Self::Unavailable(format!("audit log unavailable: {e}; the request was not carried out"))
            }
        }
    }
}

impl From<StateError> for IcebergError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::NamespaceExists(ns) => Self::AlreadyExists(format!("namespace {ns} already exists")),
            StateError::NoSuchNamespace(ns) => Self::NoSuchNamespace(ns),
            StateError::NamespaceNotEmpty(ns) => Self::NamespaceNotEmpty(ns),
            StateError::TableExists(t) => Self::AlreadyExists(format!("table {t} already exists")),
            StateError::NoSuchTable(t) => Self::NoSuchTable(t),
            StateError::Database(e) => Self::Unavailable(format!("the catalog database is unavailable: {e}")),
        }
    }
}

impl From<MetadataError> for IcebergError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::Invalid(m) => Self::BadRequest(m),
            MetadataError::RequirementFailed(m) => Self::CommitFailed(format!("requirement failed: {m}")),
        }
    }
}

impl From<FileError> for IcebergError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::NotFound(loc) => Self::NotFound(format!("no metadata file at {loc}")),
            FileError::BadLocation(loc) => Self::BadRequest(format!("{loc} is not an s3:// location")),
            FileError::Invalid(m) => Self::Internal(m),
            FileError::Store(m) => Self::Unavailable(format!("the lake store failed: {m}")),
        }
    }
}
