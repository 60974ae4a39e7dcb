//! The S3 front's errors, typed by cause and mapped once, here, to S3's code, status and message.

use http::StatusCode;

use super::backend::BackendError;
use super::classify::ClassifyError;
use lakegate_core::credentials::CredentialError;
use lakegate_core::gate::GateError;
use lakegate_core::identity::IdentityError;
use lakegate_s3_protocol::post_policy::PostError;
use lakegate_s3_protocol::sigv4::SigV4Error;
use lakegate_s3_protocol::xml::XmlError;

/// Why an S3 request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error(transparent)]
    Signature(#[from] SigV4Error),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// A POST Object form that cannot be served as sent, or that its own policy refuses.
    #[error(transparent)]
    Post(#[from] PostError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("the request is outside what the credentials may reach")]
    OutOfScope,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    #[error("the store answered {code}: {message}")]
    Store { status: StatusCode, code: String, message: String },
}

impl S3Error {
    /// The S3 error code.
    pub fn code(&self) -> &str {
        match self {
            Self::Signature(e) => e.s3_code(),
            Self::Credential(e) => e.s3_code(),
            Self::Post(e) => e.s3_code(),
            Self::Classify(e) => match e {
                ClassifyError::NotImplemented(_) | ClassifyError::UnsupportedHeader(_) => "NotImplemented",
                ClassifyError::MethodNotAllowed => "MethodNotAllowed",
                ClassifyError::InvalidBucketName => "InvalidBucketName",
                // A key that could mean another path is refused as S3 refuses what it will not serve.
                ClassifyError::InvalidKey(_) => "AccessDenied",
                ClassifyError::InvalidArgument(_) => "InvalidArgument",
                ClassifyError::InvalidRequest(_) => "InvalidRequest",
            },
            Self::Gate(GateError::Audit(_)) => "ServiceUnavailable",
            Self::Gate(GateError::Identity(IdentityError::Missing)) => "AccessDenied",
            Self::Gate(_) | Self::OutOfScope => "AccessDenied",
            Self::Backend(BackendError::Request(_)) => "InternalError",
            Self::Backend(BackendError::ClientBody(_)) => "IncompleteBody",
            Self::Backend(_) => "ServiceUnavailable",
            Self::Xml(XmlError::VersionsNotSupported) => "NotImplemented",
            Self::Xml(_) => "MalformedXML",
            Self::BodyTooLarge(_) => "MaxMessageLengthExceeded",
            Self::HeadersTooLarge(_) => "RequestHeaderSectionTooLarge",
            Self::BodyRead(_) => "IncompleteBody",
            Self::Store { code, .. } => code,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Self::Signature(e) => e.http_status(),
            Self::Credential(_) => 400,
            Self::Post(e) => e.http_status(),
            Self::Classify(ClassifyError::NotImplemented(_) | ClassifyError::UnsupportedHeader(_)) => 501,
            Self::Classify(ClassifyError::MethodNotAllowed) => 405,
            Self::Classify(ClassifyError::InvalidKey(_)) => 403,
            Self::Classify(_) => 400,
            Self::Gate(GateError::Audit(_)) => 503,
            Self::Gate(_) | Self::OutOfScope => 403,
            Self::Backend(BackendError::Request(_)) => 500,
            Self::Backend(BackendError::ClientBody(_)) => 400,
            Self::Backend(_) => 503,
            Self::Xml(XmlError::VersionsNotSupported) => 501,
            Self::Xml(_) | Self::BodyTooLarge(_) | Self::HeadersTooLarge(_) | Self::BodyRead(_) => 400,
            Self::Store { status, .. } => return *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message for the client: never a secret, never a policy's text.
    pub fn message(&self) -> String {
        match self {
            Self::Gate(GateError::Denied(_)) | Self::OutOfScope => "Access Denied".into(),
            Self::Gate(GateError::Audit(_)) => "the audit log is unavailable; the request was not served".into(),
            Self::Store { message, .. } => message.clone(),
            // The transport's own words stay in the log and the audit record.
            Self::Backend(e) => e.client_message().into(),
            other => other.to_string(),
        }
    }
}
