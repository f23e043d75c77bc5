//! Errors as the cloud sends them: `{"error": {"code", "message", "target"?, "details": []}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::catalog::CatalogError;
use crate::net::nics::NicError;
use crate::net::vnet::VnetError;
use crate::report::chain;
use crate::vm::VmError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The request field the error is about (the cloud's `error.target`).
    pub target: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn internal(e: &dyn std::error::Error) -> Self {
        let msg = chain(e);
        tracing::error!(error = %msg, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            msg,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            json!({ "error": { "code": self.code, "message": self.message, "details": [] } });
        if let Some(t) = &self.target {
            body["error"]["target"] = json!(t);
        }
        (
            self.status,
            [("x-ms-error-code", self.code.clone())],
            axum::Json(body),
        )
            .into_response()
    }
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        match &e {
            VmError::ResourceGroupNotFound(_) => {
                Self::not_found("ResourceGroupNotFound", e.to_string())
            }
            VmError::NotFound(..) => Self::not_found("ResourceNotFound", e.to_string()),
            VmError::InvalidParameter(_) => Self::bad_request(e.to_string()),
            VmError::InvalidField { target, message } => {
                Self::bad_request(message.clone()).with_target(target)
            }
            VmError::UnknownSize(..) => {
                Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", e.to_string())
            }
            VmError::Image(CatalogError::BadUrn(_)) => Self::bad_request(e.to_string()),
            // The cloud: 404 PlatformImageNotFound, target imageReference.
            VmError::Image(CatalogError::NotFound { .. }) => {
                Self::not_found("PlatformImageNotFound", e.to_string())
                    .with_target("imageReference")
            }
            // Not the caller's fault, but retrying cannot help either: 409, not 500.
            VmError::Image(CatalogError::Corrupted { .. } | CatalogError::FileMissing { .. }) => {
                Self::new(StatusCode::CONFLICT, "ImageCorrupted", chain(&e))
                    .with_target("imageReference")
            }
            VmError::Image(CatalogError::Io { .. }) => Self::internal(&e),
            VmError::Exists(..) => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            VmError::Capacity(_) => {
                Self::new(StatusCode::CONFLICT, "AllocationFailed", e.to_string())
            }
            VmError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, "OperationNotAllowed", e.to_string())
            }
            VmError::Db(_) | VmError::Seed(_) => Self::internal(&e),
            VmError::StateDir(h) => Self::from(h),
            VmError::Actor(a) => {
                let status =
                    StatusCode::from_u16(a.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error() {
                    tracing::error!(error = %chain(&e), "the VM's actor failed");
                }
                Self::new(status, a.code(), chain(&e))
            }
        }
    }
}

/// A vnet's or subnet's refusal is the caller's (400, 404 for a missing one); the store and the
/// bridge are the node's (500, or 409 when another request stored the record first).
impl From<VnetError> for ApiError {
    fn from(e: VnetError) -> Self {
        match e {
            VnetError::SubnetName(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceName",
                e.to_string(),
            ),
            VnetError::InUse(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "InUseSubnetCannotBeDeleted",
                e.to_string(),
            ),
            VnetError::NotFound { .. } => Self::not_found("ResourceNotFound", e.to_string()),
            VnetError::DefaultVnet => Self::new(
                StatusCode::BAD_REQUEST,
                "OperationNotAllowed",
                e.to_string(),
            ),
            VnetError::Net(n) => Self::internal(&n),
            VnetError::Db(d) => d.into(),
            VnetError::BadPrefix(_)
            | VnetError::Outside { .. }
            | VnetError::Overlap(..)
            | VnetError::NoSpace
            | VnetError::BadName(_)
            | VnetError::Duplicate(_)
            | VnetError::Location(_)
            | VnetError::VnetName(_)
            | VnetError::SubnetWithoutName
            | VnetError::SubnetWithoutPrefix(_)
            | VnetError::PrefixMissing => Self::bad_request(e.to_string()),
        }
    }
}

impl From<crate::groups::GroupError> for ApiError {
    fn from(e: crate::groups::GroupError) -> Self {
        use crate::groups::GroupError;
        match e {
            GroupError::InvalidName(_) | GroupError::Location(_) => {
                Self::bad_request(e.to_string())
            }
            GroupError::NotFound(_) => Self::not_found("ResourceGroupNotFound", e.to_string()),
            GroupError::NotEmpty { .. } => {
                Self::new(StatusCode::CONFLICT, "ResourceGroupNotEmpty", e.to_string())
            }
            GroupError::Db(d) => Self::from(d),
        }
    }
}

/// A NIC's refusal is the caller's (400, 404 for a missing one, 409 for a changed one); the
/// store is the node's (500, or 409 when another request stored the record first).
impl From<NicError> for ApiError {
    fn from(e: NicError) -> Self {
        match e {
            NicError::Name(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceName",
                e.to_string(),
            ),
            NicError::Changed(_) => Self::new(
                StatusCode::CONFLICT,
                "PropertyChangeNotAllowed",
                e.to_string(),
            ),
            NicError::NotFound { .. } => Self::not_found("ResourceNotFound", e.to_string()),
            NicError::InUse { .. } => Self::new(StatusCode::BAD_REQUEST, "NicInUse", e.to_string()),
            // The cloud's message is the cause's: the subnet, the address or the full subnet.
            NicError::Address(n) => Self::bad_request(n.to_string()),
            NicError::Net(n) => Self::internal(&n),
            NicError::Db(d) => d.into(),
            NicError::SubnetIdMissing
            | NicError::NotSubnetId(_)
            | NicError::NotIpv4(_)
            | NicError::StaticWithoutAddress
            | NicError::Method(_)
            | NicError::NoVnet { .. } => Self::bad_request(e.to_string()),
        }
    }
}

impl From<crate::blob::accounts::AccountError> for ApiError {
    fn from(e: crate::blob::accounts::AccountError) -> Self {
        use crate::blob::accounts::AccountError;
        match e {
            AccountError::InvalidName(_) => {
                Self::new(StatusCode::BAD_REQUEST, "AccountNameInvalid", e.to_string())
            }
            AccountError::Taken(_) => Self::new(
                StatusCode::CONFLICT,
                "StorageAccountAlreadyTaken",
                e.to_string(),
            ),
            AccountError::OwnAccount => {
                Self::new(StatusCode::CONFLICT, "OperationNotAllowed", e.to_string())
            }
            AccountError::Db(d) => Self::from(d),
            AccountError::Serve { .. } | AccountError::File { .. } => Self::internal(&e),
        }
    }
}

impl From<crate::storage::db::DbError> for ApiError {
    fn from(e: crate::storage::db::DbError) -> Self {
        use crate::storage::db::DbError;
        match &e {
            // Another request made it first: the caller can read it or retry, not a 500.
            DbError::Exists(_) => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            _ => Self::internal(&e),
        }
    }
}

/// The state dir cannot take new work: 507 InsufficientStorage when it is full (RFC 4918: the
/// server cannot store what the request needs), 503 StateDirUnwritable when it takes no writes
/// (the node is unavailable for new work until its operator fixes the filesystem).
impl From<&crate::storage::health::HealthError> for ApiError {
    fn from(e: &crate::storage::health::HealthError) -> Self {
        use crate::storage::health::HealthError;
        let (status, code) = match e {
            HealthError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
            HealthError::Unwritable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "StateDirUnwritable")
            }
        };
        tracing::warn!(error = %chain(e), "new work refused");
        Self::new(status, code, chain(e))
    }
}
