//! What the actor answers a command with when it cannot do it: typed, with the cause kept as a
//! `#[source]`, and classified once ([`ActorError::status`], [`ActorError::code`]) so that only a
//! lifecycle refusal is a 409 and host trouble is a 5xx.

use crate::blob::BlobError;
use crate::net::NetError;
use crate::qemu::qmp::QmpError;
use crate::storage::db::DbError;
use crate::vm::lifecycle::Refusal;

/// Any cause of a failed step, kept with its own causes (I/O, QMP, the blob store, the network).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A step of bringing a VM up that failed: which step, what it was doing, and why (the cause
/// kept as a source, so that a full disk anywhere below is still a 507).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("creating the OS disk: {what}")]
    Disk {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("creating the NIC's tap")]
    Tap(#[source] Cause),
    #[error("starting QEMU: {what}")]
    Qemu {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("the image {0} is no longer in the catalog")]
    Image(String),
}

impl StepError {
    pub(crate) fn disk(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StepError::Disk {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn qemu(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StepError::Qemu {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn tap(source: impl Into<Cause>) -> Self {
        StepError::Tap(source.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The lifecycle does not allow it in the VM's state (the cloud's 409 OperationNotAllowed).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The VM's actor ended (deleted) before it answered.
    #[error("the VM is being deleted")]
    Gone,
    #[error(transparent)]
    Boot(#[from] StepError),
    /// QEMU's monitor is not there, or does not answer.
    #[error("{0}")]
    NoMonitor(&'static str),
    /// The guest did not do its part in time (let go of a hot-unplugged disk).
    #[error("{0}")]
    GuestTimeout(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Store {
        what: &'static str,
        #[source]
        source: DbError,
    },
    #[error("{what}")]
    Qmp {
        what: String,
        #[source]
        source: QmpError,
    },
    #[error("{what}")]
    Blob {
        what: String,
        #[source]
        source: BlobError,
    },
    #[error("{what}")]
    Net {
        what: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("{what}")]
    Jail {
        what: String,
        #[source]
        source: crate::qemu::jail::JailError,
    },
    #[error("storing the screenshot")]
    Shot(#[source] crate::diagnostics::screenshot::ShotError),
    #[error("a blocking task of the actor failed")]
    Join(#[source] tokio::task::JoinError),
}

impl ActorError {
    /// The file system is full (ENOSPC, EDQUOT): the 507 the state-dir check gives up front.
    pub fn no_space(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }

    /// The HTTP status the cloud would answer with.
    pub fn status(&self) -> u16 {
        match self {
            ActorError::Refused(_) | ActorError::Gone | ActorError::GuestTimeout(_) => 409,
            ActorError::Boot(StepError::Image(_)) => 409,
            _ if self.no_space() => 507,
            _ => 500,
        }
    }

    /// The cloud's error code.
    pub fn code(&self) -> &'static str {
        match self.status() {
            409 => "OperationNotAllowed",
            507 => "InsufficientStorage",
            _ => "InternalServerError",
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ActorError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn qmp(what: impl Into<String>, source: QmpError) -> Self {
        ActorError::Qmp {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn blob(what: impl Into<String>, source: BlobError) -> Self {
        ActorError::Blob {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_are_409_and_a_full_disk_is_507() {
        let refused = ActorError::from(
            crate::vm::lifecycle::check(
                crate::vm::lifecycle::PowerOp::Restart,
                crate::vm::model::ProvisioningState::Succeeded,
                crate::vm::model::PowerState::Stopped,
            )
            .unwrap_err(),
        );
        assert_eq!(
            (refused.status(), refused.code()),
            (409, "OperationNotAllowed")
        );
        let io = ActorError::io(
            "creating data disk d1",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!((io.status(), io.code()), (500, "InternalServerError"));
        let full = ActorError::io(
            "creating data disk d1",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!((full.status(), full.code()), (507, "InsufficientStorage"));
        let store = ActorError::Store {
            what: "removing the VM record",
            source: DbError::Exhausted("s".into()),
        };
        assert_eq!(store.status(), 500);
        assert_eq!(ActorError::NoMonitor("QMP is not connected").status(), 500);
    }
}
