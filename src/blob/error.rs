//! The blob service's errors: a status, the cloud's error code (also sent as
//! `x-ms-error-code`) and its message, rendered as `<Error><Code/><Message/></Error>`.

use hyper::StatusCode;

use super::lease::{AccessError, LeaseError};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BlobError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra XML elements after `<Message>` (e.g. `HeaderName`, `AuthenticationErrorDetail`).
    pub details: Vec<(&'static str, String)>,
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

impl BlobError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        BlobError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
    pub fn with_detail(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.details.push((name, value.into()));
        self
    }

    pub fn container_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ContainerNotFound",
            "The specified container does not exist.",
        )
    }
    pub fn container_exists() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "ContainerAlreadyExists",
            "The specified container already exists.",
        )
    }
    pub fn blob_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
        )
    }
    pub fn blob_exists() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "BlobAlreadyExists",
            "The specified blob already exists.",
        )
    }
    pub fn account_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The specified resource does not exist.",
        )
    }
    pub fn invalid_header(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidHeaderValue",
            "The value for one of the HTTP headers is not in the correct format.",
        )
        .with_detail("HeaderName", name)
        .with_detail("HeaderValue", value)
    }
    pub fn missing_header(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified.",
        )
        .with_detail("HeaderName", name)
    }
    pub fn invalid_query(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            format!("Value for one of the query parameters specified in the request URI is invalid. ({name}={value})"),
        )
        .with_detail("QueryParameterName", name)
    }
    pub fn invalid_xml() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlDocument",
            "XML specified is not syntactically valid.",
        )
    }
    /// A well-formed body with a value the operation cannot take (a block id that is not
    /// base64 of 1 to 64 bytes, a signed identifier's id that is empty or too long).
    pub fn invalid_xml_node(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlNodeValue",
            "The value for one of the XML nodes is not in the correct format.",
        )
        .with_detail("XmlNodeName", name)
        .with_detail("XmlNodeValue", value)
    }
    pub fn block_list_too_long(max: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BlockListTooLong",
            format!("The block list may not contain more than {max} blocks."),
        )
    }
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The request body is too large and exceeds the maximum permissible limit.",
        )
    }
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidInput", msg)
    }
    pub fn unsupported(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedHttpVerb",
            format!("The resource doesn't support the specified HTTP verb or operation ({what})."),
        )
    }
    pub fn condition_not_met() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    }
    pub fn not_modified() -> Self {
        Self::new(
            StatusCode::NOT_MODIFIED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    }
    pub fn invalid_page_range() -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidPageRange",
            "The page range specified is invalid.",
        )
    }
    pub fn invalid_range() -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
        )
    }
    pub fn blob_type_mismatch() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "InvalidBlobType",
            "The blob type is invalid for this operation.",
        )
    }
    pub fn auth_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        )
        .with_detail("AuthenticationErrorDetail", detail)
    }
    pub fn permission_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
    }
    pub fn ip_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationSourceIPMismatch",
            "This request is not authorized to perform this operation using this source IP.",
        )
    }
    pub fn protocol_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationProtocolMismatch",
            "This request is not authorized to perform this operation using this protocol.",
        )
    }
    pub fn resource_type_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationResourceTypeMismatch",
            "This request is not authorized to perform this operation using this resource type.",
        )
    }
    pub fn no_auth() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
        )
    }
    pub fn public_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The specified resource does not exist.",
        )
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "blob service internal error");
        Self::unlogged_internal()
    }
    /// The cloud's 500, for a failure logged elsewhere (a handler's panic: src/serve.rs).
    pub fn unlogged_internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        )
    }
    pub fn lease(e: LeaseError) -> Self {
        Self::new(StatusCode::CONFLICT, e.code(), e.message())
    }
    /// A blob operation refused by a lease; `container` picks the container flavour.
    pub fn lease_access(e: AccessError, container: bool) -> Self {
        let (code, msg) = match (e, container) {
            (AccessError::IdMissing, false) => (
                "LeaseIdMissing",
                "There is currently a lease on the blob and no lease ID was specified in the request.",
            ),
            (AccessError::IdMissing, true) => (
                "LeaseIdMissing",
                "There is currently a lease on the container and no lease ID was specified in the request.",
            ),
            (AccessError::IdMismatch, false) => (
                "LeaseIdMismatchWithBlobOperation",
                "The lease ID specified did not match the lease ID for the blob.",
            ),
            (AccessError::IdMismatch, true) => (
                "LeaseIdMismatchWithContainerOperation",
                "The lease ID specified did not match the lease ID for the container.",
            ),
            (AccessError::NotPresent, false) => (
                "LeaseNotPresentWithBlobOperation",
                "There is currently no lease on the blob.",
            ),
            (AccessError::NotPresent, true) => (
                "LeaseNotPresentWithContainerOperation",
                "There is currently no lease on the container.",
            ),
        };
        Self::new(StatusCode::PRECONDITION_FAILED, code, msg)
    }
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        BlobError::internal(e)
    }
}

/// Refuses a write when the store's filesystem cannot take it (see `storage::health`): 507
/// InsufficientStorage when it is full, 503 StateDirUnwritable when it takes no writes; the
/// message says what to do.
pub fn state_dir(health: &crate::storage::health::Health, root: &std::path::Path) -> Result<()> {
    use crate::storage::health::HealthError;
    health.check(root).map_err(|e| {
        let (status, code) = match &e {
            HealthError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
            HealthError::Unwritable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "StateDirUnwritable")
            }
        };
        tracing::warn!(error = %crate::report::chain(&e), "blob write refused");
        BlobError::new(status, code, crate::report::chain(&e))
    })
}
