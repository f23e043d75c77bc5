//! A create that resumes a boot snapshot (`vm/snapshot.rs`): which snapshot, the VM's console
//! started with the snapshot's boot, the resumed QEMU continued, and the guest handed its
//! identity; or, for a shape seen the first time, the snapshot made after the VM has booted.

use std::path::Path;
use std::time::Duration;

use tracing::Instrument;

use super::{chain, Actor, StepError};
use crate::catalog::ImageVersion;
use crate::diagnostics::boots::{Mark, Source};
use crate::qemu::argv::{Snapshot, VmSpec};
use crate::qemu::qmp::{Qmp, QmpError};
use crate::vm::snapshot::{self, Saved};

/// Why a QEMU is booted: only a create may resume a boot snapshot (start, restart and
/// redeploy boot the kernel with the VM's own command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BootReason {
    Create,
    Start,
    Redeploy,
}

impl BootReason {
    /// The boot record's reason (diagnostics/boots.rs), as the API shows it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BootReason::Create => "create",
            BootReason::Start => "start",
            BootReason::Redeploy => "redeploy",
        }
    }
}

/// Why a resumed QEMU could not be continued.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResumeError {
    /// `query-status` failed.
    #[error(transparent)]
    Status(QmpError),
    /// QEMU is in a state a resumed guest cannot be continued from.
    #[error("QEMU is {0:?}")]
    State(Option<String>),
    #[error("continuing the guest")]
    Cont(#[source] QmpError),
}

/// What a create does about boot snapshots.
pub(super) enum Plan {
    /// None: not eligible, or snapshots are off.
    Cold,
    /// No snapshot of this shape yet: boot cold, then make one.
    Make(String),
    /// Resume this one.
    Resume(Saved),
}

impl Actor {
    /// Boots the VM. A create resumes its shape's boot snapshot when there is one; if that
    /// fails, the snapshot is deleted and the VM boots cold (which makes the snapshot again).
    pub(super) async fn boot(
        &mut self,
        image: &ImageVersion,
        requested: Option<std::time::Instant>,
        reason: BootReason,
    ) -> Result<(), StepError> {
        let mut resumed = None;
        let may_resume = reason == BootReason::Create;
        let first = self
            .boot_inner(image, requested, reason, may_resume, &mut resumed)
            .await;
        match (first, resumed) {
            (Err(e), Some(saved)) => {
                self.resume_failed(&saved, &e);
                self.boot_inner(image, requested, reason, true, &mut None)
                    .await
            }
            (r, _) => r,
        }
    }

    /// Picks the plan for a VM about to boot; for a resume, points `spec` at the state and
    /// starts the VM's console with the snapshot's.
    pub(super) fn snapshot_plan(&self, spec: &mut VmSpec, image: &ImageVersion) -> Plan {
        let Some(key) = self.node.snapshots.key_for(spec, image) else {
            return Plan::Cold;
        };
        let Some(saved) = self.node.snapshots.find(&key) else {
            return Plan::Make(key);
        };
        if let Err(e) = start_console(&saved, &spec.serial_log) {
            tracing::warn!(error = %e, "cannot copy the snapshot's console; booting cold");
            return Plan::Cold;
        }
        spec.snapshot = Some(Snapshot::Resume(saved.state()));
        tracing::info!(key = %saved.key, "resuming a boot snapshot");
        self.diag.event(
            Source::Vmnode,
            Mark::Info,
            format!("resuming boot snapshot {}", saved.key),
        );
        Plan::Resume(saved)
    }

    /// After QMP is up on a resumed QEMU: waits for the state to load, continues the guest and
    /// hands it its identity on a task of its own. If the guest does not take it, the snapshot
    /// is deleted and the guest reset: it then boots its kernel with its own command line.
    pub(super) async fn continue_resumed(&self, qmp: &Qmp, saved: &Saved) -> Result<(), StepError> {
        loaded_then_continue(qmp)
            .await
            .map_err(|e| StepError::Qemu(format!("resuming the boot snapshot: {}", chain(&e))))?;
        self.hand_identity_later(qmp, Some(saved.key.clone()));
        Ok(())
    }

    /// Re-adoption of a resumed QEMU (`-incoming` in its command line): the daemon may have
    /// been killed before it continued the guest or handed it its identity, so both are done
    /// again. A guest that took its identity already never reads the file again.
    pub(super) async fn adopt_resumed(&self, qmp: &Qmp, pid: i32) {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !argv.split(|b| *b == 0).any(|a| a == b"-incoming") {
            return;
        }
        if let Err(e) = loaded_then_continue(qmp).await {
            tracing::warn!(error = %chain(&e), "cannot continue the re-adopted resumed guest");
            return;
        }
        self.hand_identity_later(qmp, None);
    }

    /// Hands the guest its identity on a task of its own; for a fresh resume (`key`), a guest
    /// that does not take it costs its snapshot and is reset.
    fn hand_identity_later(&self, qmp: &Qmp, key: Option<String>) {
        let qmp = qmp.clone();
        let agent = self.agent.clone();
        let mac = self.rec.nic.mac.clone();
        let snaps = self.node.snapshots.clone();
        let diag = self.diag.clone();
        let task = async move {
            let started = std::time::Instant::now();
            match snapshot::hand_identity(&agent, &mac).await {
                Ok(()) => {
                    tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        "identity handed to the resumed guest"
                    );
                    diag.event(
                        Source::Vmnode,
                        Mark::Info,
                        format!("resumed guest given its identity (MAC {mac})"),
                    );
                }
                Err(e) if key.is_none() => {
                    tracing::warn!(error = %e, "the re-adopted resumed guest's agent did not take its identity again");
                }
                Err(e) => {
                    let key = key.unwrap_or_default();
                    tracing::error!(error = %e, "the resumed guest did not take its identity; resetting it");
                    diag.event(Source::Vmnode, Mark::Info, format!("the resumed guest did not take its identity ({e}): snapshot {key} deleted, guest reset to boot cold"));
                    snaps.discard(&key);
                    let _ = qmp
                        .execute_raw("system_reset", None, Duration::from_secs(10))
                        .await;
                }
            }
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
    }

    /// A resume that failed: the snapshot is deleted and said so; the caller boots cold.
    pub(super) fn resume_failed(&mut self, saved: &Saved, e: &StepError) {
        tracing::warn!(key = %saved.key, error = %e, "resuming the boot snapshot failed; booting cold");
        self.diag.event(
            Source::Vmnode,
            Mark::Info,
            format!(
                "resuming boot snapshot {} failed ({e}); it is deleted and the VM boots cold",
                saved.key
            ),
        );
        self.node.snapshots.discard(&saved.key);
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
        self.qmp = None;
        self.events = None;
    }

    /// A VM of a new shape has booted: make its shape's snapshot in the background.
    pub(super) fn make_snapshot_later(&self, spec: &VmSpec, image: &ImageVersion, key: String) {
        self.node
            .snapshots
            .make_later(spec.clone(), image.clone(), key);
    }
}

/// Waits until QEMU has loaded the incoming state, then continues the guest if it is paused.
async fn loaded_then_continue(qmp: &Qmp) -> Result<(), ResumeError> {
    let t = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = qmp
            .execute_raw("query-status", None, t)
            .await
            .map_err(ResumeError::Status)?;
        match s["status"].as_str() {
            Some("inmigrate") if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Some("paused") | Some("prelaunch") => break,
            Some("running") => return Ok(()),
            other => return Err(ResumeError::State(other.map(str::to_string))),
        }
    }
    qmp.execute_raw("cont", None, t)
        .await
        .map(|_| ())
        .map_err(ResumeError::Cont)
}

/// The VM's console begins with the snapshot guest's boot, then a line saying where it resumed.
fn start_console(saved: &Saved, spool: &Path) -> std::io::Result<()> {
    let mut text = std::fs::read(saved.console())?;
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(
        format!(
            "vmnode: resumed from boot snapshot {}: the lines above are its guest's boot, up to its snapshot point\n",
            saved.key
        )
        .as_bytes(),
    );
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(spool)?;
    std::io::Write::write_all(&mut f, &text)
}
