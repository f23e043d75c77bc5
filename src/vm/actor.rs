//! The one task that owns a VM. API requests arrive on its queue; QEMU's exit and QMP's
//! disconnect arrive as events; the current record is published on a `watch` and persisted on
//! every change. Every log line of the VM carries a `vm` span with its name and vmId.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::model::{ErrorBody, PowerState, ProvisioningState, VmRecord};
use super::{Command, Node};
use crate::catalog::ImageVersion;
use crate::qemu::{argv, process, qmp::Qmp};
use crate::storage::db::Kind;

pub enum Start {
    /// A new VM: the image to boot, and when the create request arrived.
    Create(Box<ImageVersion>, std::time::Instant),
    Adopt,
}

struct Actor {
    node: Arc<Node>,
    rec: VmRecord,
    state: watch::Sender<VmRecord>,
    qmp: Option<Qmp>,
    child: Option<tokio::process::Child>,
}

pub fn spawn(
    node: Arc<Node>,
    rec: VmRecord,
    start: Start,
    rx: mpsc::Receiver<Command>,
    state: watch::Sender<VmRecord>,
) {
    let span = tracing::info_span!("vm", name = %rec.name, vm_id = %rec.vm_id);
    let actor = Actor {
        node,
        rec,
        state,
        qmp: None,
        child: None,
    };
    tokio::spawn(actor.run(start, rx).instrument(span));
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("creating the OS disk: {0}")]
    Disk(String),
    #[error("creating the NIC's tap: {0}")]
    Tap(String),
    #[error("starting QEMU: {0}")]
    Qemu(String),
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Actor {
    fn run_dir(&self) -> std::path::PathBuf {
        self.node.cfg.paths.vm_run(&self.rec.vm_id)
    }

    /// Persists and publishes the record.
    fn publish(&mut self) {
        if let Err(e) = self.node.db.put(Kind::Vm, &self.rec.key(), &self.rec) {
            tracing::error!(error = %chain(&e), "cannot persist VM state");
        }
        self.state.send_replace(self.rec.clone());
    }

    async fn run(mut self, start: Start, mut rx: mpsc::Receiver<Command>) {
        match start {
            Start::Create(image, requested) => {
                tracing::info!(image = %image.urn(), "creating");
                if let Err(e) = self.provision(&image, requested).await {
                    tracing::error!(error = %e, "provisioning failed");
                    self.rec.provisioning_state = ProvisioningState::Failed;
                    self.rec.power = PowerState::Stopped;
                    self.rec.error = Some(ErrorBody {
                        code: "VMProvisioningFailed".into(),
                        message: e.to_string(),
                        details: vec![],
                    });
                    self.stop_qemu().await;
                    self.publish();
                }
            }
            Start::Adopt => self.adopt().await,
        }
        loop {
            let qmp = self.qmp.clone();
            let qmp_closed = async move {
                match qmp {
                    Some(q) => q.closed().await,
                    None => std::future::pending().await,
                }
            };
            let child_exit = async {
                match self.child.as_mut() {
                    Some(c) => c.wait().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Delete(reply)) => {
                        let r = self.delete().await;
                        let _ = reply.send(r);
                        return;
                    }
                    None => return,
                },
                status = child_exit => {
                    tracing::info!(?status, "QEMU exited");
                    self.child = None;
                    self.qemu_gone();
                }
                _ = qmp_closed => {
                    tracing::info!("QMP connection closed");
                    self.qmp = None;
                    // For a child of ours, wait() says whether QEMU is really gone; for an
                    // adopted one, look at the pid.
                    if self.child.is_none() {
                        let gone = self.rec.pid.map(process::is_gone).unwrap_or(true);
                        if gone { self.qemu_gone(); } else {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if self.rec.pid.map(process::is_gone).unwrap_or(true) {
                                self.qemu_gone();
                            } else {
                                tracing::warn!("QMP closed but QEMU is alive: state unknown");
                                self.rec.power = PowerState::Unknown;
                                self.publish();
                            }
                        }
                    }
                }
            }
        }
    }

    fn qemu_gone(&mut self) {
        if self.rec.power != PowerState::Stopped {
            self.rec.power = PowerState::Stopped;
            self.rec.pid = None;
            self.publish();
        }
    }

    async fn provision(
        &mut self,
        image: &ImageVersion,
        requested: std::time::Instant,
    ) -> Result<(), StepError> {
        let src = image.disk();
        let dst = self.rec.os_disk_path.clone();
        let method =
            tokio::task::spawn_blocking(move || crate::storage::disk::sparse_clone(&src, &dst))
                .await
                .map_err(|e| StepError::Disk(e.to_string()))?
                .map_err(|e| StepError::Disk(chain(&e)))?;
        tracing::info!(?method, disk = %self.rec.os_disk_path.display(), "OS disk created");

        let tap = self.make_tap().await?;
        let run = self.run_dir();
        std::fs::create_dir_all(&run)
            .map_err(|e| StepError::Qemu(format!("{}: {e}", run.display())))?;
        let _ = std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        if let Some(d) = self.rec.serial_log.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| StepError::Qemu(format!("{}: {e}", d.display())))?;
        }
        let spec = argv::VmSpec {
            name: self.rec.name.clone(),
            vm_id: self.rec.vm_id.clone(),
            accel: self.node.accel.accel,
            cpus: super::sizes::find(&self.rec.size)
                .map(|s| s.number_of_cores)
                .unwrap_or(1),
            memory_mb: super::sizes::find(&self.rec.size)
                .map(|s| s.memory_in_mb)
                .unwrap_or(1024),
            kernel: image.kernel(),
            initrd: image.initrd(),
            cmdline: image.manifest.cmdline.clone(),
            disk: self.rec.os_disk_path.clone(),
            caching: self.rec.caching.clone(),
            mac: self.rec.nic.mac.clone(),
            serial_log: self.rec.serial_log.clone(),
            qmp_socket: run.join("qmp.sock"),
            qga_socket: run.join("qga.sock"),
            pidfile: run.join("qemu.pid"),
        };
        let args = argv::build(&spec);
        let _ = std::fs::write(
            run.join("qemu.argv.json"),
            serde_json::to_vec(&args).unwrap_or_default(),
        );
        for s in [&spec.qmp_socket, &spec.qga_socket, &spec.pidfile] {
            let _ = std::fs::remove_file(s);
        }
        let log = run.join("qemu.log");
        let mut child =
            process::spawn(&args, &tap, &log).map_err(|e| StepError::Qemu(chain(&e)))?;
        tracing::info!(
            pid = child.id(),
            accel = %spec.accel,
            since_request_us = requested.elapsed().as_micros() as u64,
            "QEMU spawned"
        );
        // QEMU holds the tap now; dropping ours ties the tap's life to QEMU's.
        drop(tap);
        self.rec.pid = child.id().map(|p| p as i32);
        let waited =
            process::wait_for_socket(&mut child, &spec.qmp_socket, &log, Duration::from_secs(20))
                .await;
        self.child = Some(child);
        waited.map_err(|e| StepError::Qemu(chain(&e)))?;
        // The socket file appears at bind(), a moment before QEMU listens: retry refusals.
        let qmp = Qmp::connect_with_retry(
            &spec.qmp_socket,
            Some(run.join("qmp.transcript")),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| StepError::Qemu(chain(&e)))?;
        let status = qmp
            .execute(qapi::qmp::query_status {})
            .await
            .map_err(|e| StepError::Qemu(chain(&e)))?;
        tracing::info!(status = ?status.status, "QMP connected");
        self.qmp = Some(qmp);
        self.rec.provisioning_state = ProvisioningState::Succeeded;
        self.rec.power = PowerState::Running;
        self.publish();
        Ok(())
    }

    async fn make_tap(&self) -> Result<OwnedFd, StepError> {
        let net = self.node.net.clone();
        let name = self.rec.nic.tap.clone();
        tokio::task::spawn_blocking(move || net.create_tap(&name))
            .await
            .map_err(|e| StepError::Tap(e.to_string()))?
            .map_err(|e| StepError::Tap(chain(&e)))
    }

    /// Rebuilds the VM's state from the live system after a daemon restart.
    async fn adopt(&mut self) {
        if self.rec.provisioning_state == ProvisioningState::Deleting {
            tracing::info!("resuming an interrupted delete");
            return;
        }
        let run = self.run_dir();
        let pid = process::read_pidfile(&run.join("qemu.pid")).or(self.rec.pid);
        let alive = pid.filter(|p| process::pid_is_vm(*p, &self.rec.vm_id));
        match alive {
            Some(pid) => {
                self.rec.pid = Some(pid);
                match self.connect_qmp(&run).await {
                    Some((qmp, status)) => {
                        tracing::info!(pid, %status, "re-adopted running QEMU");
                        self.rec.power = if status == "running" {
                            PowerState::Running
                        } else {
                            PowerState::Stopped
                        };
                        if self.rec.provisioning_state == ProvisioningState::Creating {
                            self.rec.provisioning_state = ProvisioningState::Succeeded;
                        }
                        self.qmp = Some(qmp);
                    }
                    None => {
                        tracing::warn!(pid, "QEMU is alive but QMP is unreachable: state unknown");
                        self.rec.power = PowerState::Unknown;
                    }
                }
            }
            None => {
                if self.rec.provisioning_state == ProvisioningState::Creating {
                    self.rec.provisioning_state = ProvisioningState::Failed;
                    self.rec.error = Some(ErrorBody {
                        code: "VMProvisioningFailed".into(),
                        message: "the daemon stopped while the VM was being created; delete it and create it again".into(),
                        details: vec![],
                    });
                }
                self.rec.power = PowerState::Stopped;
                self.rec.pid = None;
            }
        }
        self.publish();
    }

    async fn connect_qmp(&self, run: &std::path::Path) -> Option<(Qmp, String)> {
        let sock = run.join("qmp.sock");
        for _ in 0..20 {
            if let Ok(q) = Qmp::connect(&sock, Some(run.join("qmp.transcript"))).await {
                if let Ok(s) = q.execute(qapi::qmp::query_status {}).await {
                    let status = serde_json::to_value(s.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    return Some((q, status));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Stops QEMU: `quit` over QMP, then SIGKILL if it lingers.
    async fn stop_qemu(&mut self) {
        if let Some(q) = self.qmp.take() {
            let _ = q.execute(qapi::qmp::quit {}).await;
        }
        let pid = self
            .rec
            .pid
            .filter(|p| process::pid_is_vm(*p, &self.rec.vm_id));
        if let Some(pid) = pid {
            if self.child.is_none() && self.qmp.is_none() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            process::ensure_dead(pid, Duration::from_secs(5)).await;
        }
        if let Some(mut c) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
        self.rec.pid = None;
    }

    /// Removes the VM and everything it owns. Each step tolerates a missing piece, so an
    /// interrupted delete can be run again.
    async fn delete(&mut self) -> Result<(), String> {
        tracing::info!("deleting");
        self.rec.provisioning_state = ProvisioningState::Deleting;
        self.rec.power = PowerState::Stopping;
        self.publish();
        self.stop_qemu().await;
        let net = self.node.net.clone();
        let tap = self.rec.nic.tap.clone();
        let tap_left = tokio::task::spawn_blocking(move || net.remove_tap(&tap)).await;
        if let Ok(Err(e)) = tap_left {
            return Err(format!(
                "cannot remove tap {}: {}",
                self.rec.nic.tap,
                chain(&e)
            ));
        }
        let db = &self.node.db;
        let nic_key = format!("{}/{}", self.rec.rg, self.rec.nic.name);
        let steps = db
            .lease_delete(&self.rec.nic.mac)
            .and_then(|_| db.free_addr(&self.rec.nic.subnet, self.rec.nic.ip))
            .and_then(|_| db.delete(Kind::Nic, &nic_key).map(|_| ()));
        if let Err(e) = steps {
            return Err(format!("cannot release the NIC: {}", chain(&e)));
        }
        for path in [&self.rec.os_disk_path] {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(format!("cannot delete {}: {e}", path.display()));
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.run_dir());
        if let Some(d) = self.rec.serial_log.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Err(e) = db.delete(Kind::Vm, &self.rec.key()) {
            return Err(format!("cannot remove the VM record: {}", chain(&e)));
        }
        self.node.forget(&self.rec.key());
        tracing::info!("deleted");
        Ok(())
    }
}
