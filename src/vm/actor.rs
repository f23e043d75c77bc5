//! The one task that owns a VM. API requests arrive on its queue; QEMU's exit and QMP's
//! disconnect arrive as events; the current record is published on a `watch` and persisted on
//! every change. Every log line of the VM carries a `vm` span with its name and vmId.
//!
//! Power model: `running` is a live QEMU. A guest poweroff, `powerOff` or a crash ends QEMU, so a
//! `stopped` VM holds no process and no tap (its temp disk and DIP stay); `deallocated` also drops
//! the temp disk. `start` and `redeploy` boot a new QEMU; `restart` resets the running one.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::lifecycle::{self, PowerOp};
use super::model::{ErrorBody, PowerState, ProvisioningState, VmRecord};
use super::{Command, Node};
use crate::catalog::{self, ImageRef, ImageVersion};
use crate::config::VmRunDir;
use crate::diagnostics::recorder::Recorder;
use crate::qemu::{argv, process, qga::Agent, qmp::Qmp};
pub(crate) use crate::report::chain;
use crate::storage::db::Kind;
pub use error::{ActorError, StepError};

mod adopt;
mod agent;
mod disks;
mod error;
mod health;
mod resume;
mod screen;

pub enum Start {
    /// A new VM: the image to boot, and when the create request arrived.
    Create(Box<ImageVersion>, std::time::Instant),
    Adopt,
}

/// How long a graceful shutdown may take before QEMU is told to quit.
const GRACEFUL: Duration = Duration::from_secs(30);

/// During a boot the screen is captured this often (then on demand).
const BOOT_SHOT_EVERY: Duration = Duration::from_secs(3);
/// The flight recorder's tick: serial pump, DHCP ledger, agent probe.
const DIAG_EVERY: Duration = Duration::from_millis(500);

struct Actor {
    node: Arc<Node>,
    rec: VmRecord,
    state: watch::Sender<VmRecord>,
    qmp: Option<Qmp>,
    events: Option<tokio::sync::broadcast::Receiver<crate::qemu::qmp::QmpEvent>>,
    child: Option<tokio::process::Child>,
    diag: Recorder,
    /// The VM's run dir (sockets, pidfile, QEMU's log, the QMP transcript).
    run: VmRunDir,
    /// The VM's guest agent (its sessions one at a time; shared with extensions).
    agent: Arc<Agent>,
    /// The booted image's kernel (its font reads the screen).
    kernel: Option<std::path::PathBuf>,
    /// The boot whose final screen was captured.
    final_shot: Option<u32>,
    agent_probing: bool,
    agent_probed: Option<tokio::time::Instant>,
    agent_tx: mpsc::Sender<agent::AgentProbe>,
    agent_rx: mpsc::Receiver<agent::AgentProbe>,
    /// When the guest agent last answered (its Ready/Not Ready in the instance view).
    agent_seen: Option<tokio::time::Instant>,
    /// OS provisioning (vm/provision.rs) is running in its own task.
    provisioning: bool,
    prov_tx: mpsc::UnboundedSender<super::provision::Progress>,
    prov_rx: mpsc::UnboundedReceiver<super::provision::Progress>,
    /// A QMP health probe (actor/health.rs) is in flight.
    health_probing: bool,
    health_tx: mpsc::Sender<health::Health>,
    health_rx: mpsc::Receiver<health::Health>,
    /// The guest is paused on a failed disk write (said once; resumed by actor/health.rs).
    io_paused: bool,
}

pub fn spawn(
    node: Arc<Node>,
    rec: VmRecord,
    start: Start,
    rx: mpsc::Receiver<Command>,
    state: watch::Sender<VmRecord>,
    diag: Recorder,
    agent: Arc<Agent>,
) {
    let run = node.cfg.paths.vm_run_dir(&rec.vm_id);
    let span = tracing::info_span!("vm", name = %rec.name, vm_id = %rec.vm_id);
    let (agent_tx, agent_rx) = mpsc::channel(1);
    let (prov_tx, prov_rx) = mpsc::unbounded_channel();
    let (health_tx, health_rx) = mpsc::channel(1);
    let actor = Actor {
        node,
        rec,
        state,
        qmp: None,
        events: None,
        child: None,
        diag,
        run,
        agent,
        kernel: None,
        final_shot: None,
        agent_probing: false,
        agent_probed: None,
        agent_tx,
        agent_rx,
        agent_seen: None,
        provisioning: false,
        prov_tx,
        prov_rx,
        health_probing: false,
        health_tx,
        health_rx,
        io_paused: false,
    };
    tokio::spawn(actor.run(start, rx).instrument(span));
}

/// What a re-adoption found interrupted.
enum Resume {
    Nothing,
    Delete,
    Power(PowerOp),
}

impl Actor {
    /// Persists and publishes the record.
    fn publish(&mut self) {
        self.rec.state_time = crate::report::time_now();
        if let Err(e) = self.node.db.put(Kind::Vm, &self.rec.key(), &self.rec) {
            tracing::error!(error = %chain(&e), "cannot persist VM state");
        }
        self.state.send_replace(self.rec.clone());
    }

    fn set_power(&mut self, p: PowerState) {
        self.rec.power = p;
        self.publish();
    }

    async fn run(mut self, start: Start, mut rx: mpsc::Receiver<Command>) {
        match start {
            Start::Create(image, requested) => {
                tracing::info!(image = %image.urn(), "creating");
                if let Err(e) = self.provision(&image, requested).await {
                    tracing::error!(error = %e, "provisioning failed");
                    self.rec.provisioning_state = ProvisioningState::Failed;
                    self.rec.error = Some(ErrorBody {
                        code: "VMProvisioningFailed".into(),
                        message: e.to_string(),
                        details: vec![],
                    });
                    self.stop_qemu().await;
                    self.rec.power = PowerState::Stopped;
                    self.publish();
                }
            }
            Start::Adopt => match self.adopt().await {
                Resume::Nothing => {}
                Resume::Delete => {
                    // An interrupted delete: finish it.
                    let r = self.delete().await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "resuming delete failed");
                    } else {
                        return;
                    }
                }
                // An interrupted stop or deallocate (the guest may have been asked to power
                // off already): finish it, gracefully.
                Resume::Power(op) => {
                    tracing::info!(?op, "resuming an interrupted power operation");
                    // QEMU is live (adopt shows the operation as under way): start it over.
                    self.rec.power = PowerState::Running;
                    if let Err(e) = self.power(op).await {
                        tracing::error!(error = %e, "resuming the power operation failed");
                    }
                }
            },
        }
        let mut shots = tokio::time::interval(BOOT_SHOT_EVERY);
        shots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut diag_tick = tokio::time::interval(DIAG_EVERY);
        diag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut health_tick = tokio::time::interval(health::PROBE_EVERY);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
            let qmp_event = async {
                match self.events.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Delete(reply)) => {
                        let r = self.delete().await;
                        let done = r.is_ok();
                        let _ = reply.send(r);
                        if done {
                            return;
                        }
                    }
                    Some(Command::Power(op, reply)) => {
                        let r = self.power(op).await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Tags(tags, reply)) => {
                        self.rec.tags = tags;
                        self.publish();
                        let _ = reply.send(());
                    }
                    Some(Command::Screenshot(reply)) => {
                        let r = match self.screenshot().await {
                            Ok(p) => Ok(p),
                            Err(e) => {
                                let png = self.shot_path("png");
                                if png.exists() { Ok(png) } else { Err(e) }
                            }
                        };
                        let _ = reply.send(r);
                    }
                    Some(Command::DataDisks(disks, reply)) => {
                        let r = self.set_data_disks(disks).await;
                        let _ = reply.send(r);
                    }
                    None => return,
                },
                _ = shots.tick() => self.boot_shot().await,
                _ = diag_tick.tick() => self.diag_tick().await,
                Some(probe) = self.agent_rx.recv() => self.agent_answer(probe),
                Some(p) = self.prov_rx.recv() => self.provision_progress(p),
                _ = health_tick.tick() => self.health_tick(),
                Some(h) = self.health_rx.recv() => self.health_answer(h),
                ev = qmp_event => match ev {
                    Ok(ev) => self.qmp_event(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "QMP events lagged");
                    }
                    Err(_) => self.events = None,
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
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if self.rec.pid.map(process::is_gone).unwrap_or(true) {
                            self.qemu_gone();
                        } else {
                            tracing::warn!("QMP closed but QEMU is alive: state unknown");
                            self.set_power(PowerState::Unknown);
                        }
                    }
                }
            }
        }
    }

    /// QEMU ended on its own (guest poweroff or crash): the VM is stopped, its tap went with it.
    fn qemu_gone(&mut self) {
        self.qmp = None;
        self.events = None;
        self.rec.pid = None;
        self.diag.end_boot("QEMU exited (guest power off or crash)");
        if self.rec.power != PowerState::Stopped && self.rec.power != PowerState::Deallocated {
            self.set_power(PowerState::Stopped);
        }
    }

    fn image(&self) -> Result<ImageVersion, StepError> {
        let r = ImageRef {
            version: self.rec.exact_version.clone(),
            ..self.rec.image.clone()
        };
        // Unpublished since the VM was made? Its files are kept aside, and the VM still boots.
        catalog::resolve_pinned(&self.node.cfg.paths.images(), &r)
            .map_err(|_| StepError::Image(r.urn()))
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
        crate::failpoint::crash_point("create.disk_cloned");
        if self.rec.os_disk_gb > 0 {
            let want = self.rec.os_disk_gb << 30;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.rec.os_disk_path)
                .map_err(|e| StepError::Disk(e.to_string()))?;
            if f.metadata().map(|m| m.len() < want).unwrap_or(false) {
                // Sparse growth: costs nothing until the guest writes there.
                f.set_len(want).map_err(|e| {
                    StepError::Disk(format!("resizing to {} GiB: {e}", self.rec.os_disk_gb))
                })?;
            }
        }
        // The OS disk is a page blob under an infinite lease whose id is the VM's id.
        if let Some(store) = crate::blob::node_store() {
            crate::blob::acquire_disk_lease(&store, &self.rec.os_disk_path, &self.rec.vm_id)
                .map_err(|e| StepError::Disk(format!("leasing the OS disk blob: {e}")))?;
        }
        crate::failpoint::crash_point("create.disk_leased");
        // Data disks asked for at create: empty sparse blobs under the same lease, in the argv.
        for d in self.rec.data_disks.clone() {
            self.prepare_data_disk(&d)
                .map_err(|e| StepError::Disk(chain(&e)))?;
        }
        if self.rec.os_provisioning == super::model::OsProvisioning::Pending {
            self.rec.os_provisioning_since = Some(std::time::SystemTime::now());
        }
        self.boot(image, Some(requested), resume::BootReason::Create)
            .await?;
        self.rec.provisioning_state = ProvisioningState::Succeeded;
        self.set_power(PowerState::Running);
        crate::failpoint::crash_point("create.running");
        Ok(())
    }

    /// Makes the temp disk if missing, a tap, and starts QEMU (resuming `may_resume`'s boot
    /// snapshot when there is one, noted in `resumed`); connects QMP. See `boot` in resume.rs.
    async fn boot_inner(
        &mut self,
        image: &ImageVersion,
        requested: Option<std::time::Instant>,
        reason: resume::BootReason,
        may_resume: bool,
        resumed: &mut Option<crate::vm::snapshot::Saved>,
    ) -> Result<(), StepError> {
        let size = super::sizes::find(&self.rec.size);
        if let (Some(s), false) = (size, self.rec.temp_disk.as_os_str().is_empty()) {
            if !self.rec.temp_disk.exists() {
                let t = &self.rec.temp_disk;
                let made = t
                    .parent()
                    .map(std::fs::create_dir_all)
                    .unwrap_or(Ok(()))
                    .and_then(|_| std::fs::File::create(t))
                    .and_then(|f| f.set_len(s.resource_disk_size_in_mb << 20));
                made.map_err(|e| StepError::Disk(format!("temp disk {}: {e}", t.display())))?;
            }
        }
        let tap = self.make_tap().await?;
        crate::failpoint::crash_point("boot.tap_made");
        let run = self.run.clone();
        std::fs::create_dir_all(&run.dir)
            .map_err(|e| StepError::Qemu(format!("{}: {e}", run.dir.display())))?;
        let _ = std::fs::set_permissions(
            &run.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        if let Some(d) = self.rec.serial_log.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| StepError::Qemu(format!("{}: {e}", d.display())))?;
        }
        // A new boot record; QEMU writes the console into a fresh spool.
        self.diag.begin_boot(reason.as_str(), true);
        self.agent_down();
        self.kernel = Some(image.kernel());
        // Screens are read with the kernel's own font (diagnostics/screen_text.rs): it is
        // found in the kernel file now, beside the boot, not inside a capture.
        self.node.fonts.warm(&image.kernel());
        let mut spec = self.vm_spec(image, size);
        let plan = if may_resume {
            self.snapshot_plan(&mut spec, image)
        } else {
            resume::Plan::Cold
        };
        if let resume::Plan::Resume(saved) = &plan {
            *resumed = Some(saved.clone());
        }
        let args = argv::build(&spec);
        let _ = std::fs::write(&run.argv, serde_json::to_vec(&args).unwrap_or_default());
        let _ = std::fs::remove_file(&spec.pidfile);
        // Everything QEMU uses, opened here as root and handed over as fds (qemu/jail.rs).
        let files = crate::qemu::jail::open(&argv::passed(&spec))
            .map_err(|e| StepError::Qemu(chain(&e)))?;
        let log = &run.log;
        let mut child = process::spawn(&self.node.qemu, &args, &tap, &files, log, &spec.pidfile)
            .map_err(|e| StepError::Qemu(chain(&e)))?;
        tracing::info!(
            pid = child.id(),
            accel = %spec.accel,
            since_request_us = requested.map(|r| r.elapsed().as_micros() as u64),
            "QEMU spawned"
        );
        crate::failpoint::crash_point("boot.qemu_spawned");
        // QEMU holds the tap and its files now; dropping ours ties the tap's life to QEMU's and
        // leaves QEMU the only listener on its sockets (so its exit refuses connections).
        drop(tap);
        drop(files);
        // The guest needs seconds to reach its first DHCP packet; admitting its tap now keeps
        // the nftables update off the request → spawn path.
        let net = self.node.net.clone();
        let nic = self.rec.nic.clone();
        let admitted = tokio::task::spawn_blocking(move || net.admit(&nic));
        self.rec.pid = child.id().map(|p| p as i32);
        // The socket listens already (the daemon made it): QEMU answers once it is up.
        let connected = Qmp::connect_with_retry(
            &spec.qmp_socket,
            Some(run.transcript.clone()),
            Duration::from_secs(30),
        )
        .await;
        let early = match &connected {
            Err(_) => process::exited(&mut child, log, Duration::from_secs(2)).await,
            Ok(_) => None,
        };
        self.child = Some(child);
        admitted
            .await
            .map_err(|e| StepError::Tap(e.to_string()))?
            .map_err(|e| StepError::Tap(chain(&e)))?;
        if let Some(e) = early {
            return Err(StepError::Qemu(chain(&e)));
        }
        let qmp = connected.map_err(|e| StepError::Qemu(chain(&e)))?;
        // As patient as the handshake: a fresh QEMU on a busy host is slow, not broken (under
        // 20 concurrent creates a 5 s limit failed one VM in a run).
        let status = qmp
            .execute_timeout(qapi::qmp::query_status {}, crate::qemu::qmp::SLOW_TIMEOUT)
            .await
            .map_err(|e| StepError::Qemu(chain(&e)))?;
        tracing::info!(status = ?status.status, "QMP connected");
        if let resume::Plan::Resume(saved) = &plan {
            self.continue_resumed(&qmp, saved).await?;
        }
        crate::failpoint::crash_point("boot.qmp_connected");
        self.events = Some(qmp.events());
        self.diag.event(
            crate::diagnostics::boots::Source::Qmp,
            crate::diagnostics::boots::Mark::Info,
            format!("QMP connected: {:?}", status.status),
        );
        self.qmp = Some(qmp);
        self.rec.last_boot = Some(std::time::SystemTime::now());
        if let resume::Plan::Make(key) = plan {
            self.make_snapshot_later(&spec, image, key);
        }
        Ok(())
    }

    /// What QEMU is started with for this VM's next boot (no snapshot yet).
    fn vm_spec(&self, image: &ImageVersion, size: Option<&super::sizes::VmSize>) -> argv::VmSpec {
        argv::VmSpec {
            name: self.rec.name.clone(),
            vm_id: self.rec.vm_id.clone(),
            accel: self.node.accel.accel,
            cpus: size.map(|s| s.number_of_cores).unwrap_or(1),
            memory_mb: size.map(|s| s.memory_in_mb).unwrap_or(1024),
            kernel: image.kernel(),
            initrd: image.initrd(),
            cmdline: image.manifest.cmdline.clone(),
            disk: self.rec.os_disk_path.clone(),
            temp_disk: (!self.rec.temp_disk.as_os_str().is_empty())
                .then(|| self.rec.temp_disk.clone()),
            hotplug_slots: size.map(|s| s.max_data_disk_count).unwrap_or(0),
            data_disks: self.rec.data_disks.iter().map(disks::spec_of).collect(),
            caching: self.rec.caching.clone(),
            mac: self.rec.nic.mac.clone(),
            serial_log: self.diag.spool_path(),
            qmp_socket: self.run.qmp.clone(),
            qga_socket: self.run.qga.clone(),
            pidfile: self.run.pidfile.clone(),
            boot: if image.firmware_boot() {
                argv::Boot::Firmware
            } else {
                argv::Boot::Kernel
            },
            seed: self.rec.cloud_init_seed.clone().filter(|s| s.exists()),
            snapshot: None,
        }
    }

    async fn make_tap(&self) -> Result<OwnedFd, StepError> {
        let net = self.node.net.clone();
        let nic = self.rec.nic.clone();
        tokio::task::spawn_blocking(move || {
            // A tap of this name can linger only if a QEMU that held it is still exiting.
            // (Checked first: removing runs nftables, which costs milliseconds.)
            if net.tap_exists(&nic.tap) {
                let _ = net.remove_tap(&nic.tap);
            }
            net.create_tap(&nic)
        })
        .await
        .map_err(|e| StepError::Tap(e.to_string()))?
        .map_err(|e| StepError::Tap(chain(&e)))
    }

    /// A power operation, checked against the lifecycle rules first.
    async fn power(&mut self, op: PowerOp) -> Result<(), ActorError> {
        let effective = lifecycle::check(op, self.rec.provisioning_state, self.rec.power)?;
        if !effective {
            return Ok(());
        }
        tracing::info!(?op, from = ?self.rec.power, "power operation");
        match op {
            PowerOp::Start => {
                self.set_power(PowerState::Starting);
                crate::failpoint::crash_point("start.starting");
                self.boot_or_fail(resume::BootReason::Start).await
            }
            PowerOp::PowerOff { skip_shutdown } => {
                self.set_power(PowerState::Stopping);
                crate::failpoint::crash_point("stop.stopping");
                self.shutdown(!skip_shutdown).await;
                self.set_power(PowerState::Stopped);
                Ok(())
            }
            PowerOp::Deallocate => {
                self.set_power(PowerState::Deallocating);
                self.shutdown(true).await;
                crate::failpoint::crash_point("deallocate.qemu_stopped");
                self.drop_temp_disk();
                self.set_power(PowerState::Deallocated);
                Ok(())
            }
            PowerOp::Restart => {
                let q = self
                    .qmp
                    .clone()
                    .ok_or(ActorError::NoMonitor("QMP is not connected"))?;
                q.execute(qapi::qmp::system_reset {})
                    .await
                    .map_err(|e| ActorError::qmp("resetting the guest", e))?;
                tracing::info!("guest reset");
                Ok(())
            }
            PowerOp::Redeploy => {
                self.set_power(PowerState::Stopping);
                self.shutdown(false).await;
                self.drop_temp_disk();
                self.set_power(PowerState::Starting);
                self.boot_or_fail(resume::BootReason::Redeploy).await
            }
        }
    }

    async fn boot_or_fail(&mut self, reason: resume::BootReason) -> Result<(), ActorError> {
        let r = match self.image() {
            Ok(img) => self.boot(&img, None, reason).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                self.set_power(PowerState::Running);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "start failed");
                self.stop_qemu().await;
                self.set_power(PowerState::Stopped);
                Err(e.into())
            }
        }
    }

    fn drop_temp_disk(&mut self) {
        if !self.rec.temp_disk.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.rec.temp_disk);
        }
    }

    /// Ends QEMU: gracefully when asked (the ACPI power button at once, and the guest agent's
    /// shutdown as soon as the agent answers; up to 30 s), then `quit`, then SIGKILL.
    async fn shutdown(&mut self, graceful: bool) {
        if graceful && self.alive() {
            if let Some(q) = &self.qmp {
                let _ = q.execute(qapi::qmp::system_powerdown {}).await;
            }
            let deadline = tokio::time::Instant::now() + GRACEFUL;
            let mut asked = false;
            let mut off = false;
            while tokio::time::Instant::now() < deadline {
                if !asked {
                    match self.agent.connect(Duration::from_secs(1)).await {
                        Ok(mut a) => {
                            asked = a.shutdown().await.is_ok();
                            tracing::info!("asked the guest agent to power off");
                        }
                        Err(e) => {
                            tracing::debug!(error = %chain(&e), "guest agent not answering yet")
                        }
                    }
                }
                if self.wait_exit(Duration::from_millis(500)).await {
                    off = true;
                    break;
                }
            }
            if off {
                tracing::info!("guest powered off");
            } else {
                tracing::warn!("guest did not power off within {GRACEFUL:?}; stopping QEMU");
            }
        }
        self.stop_qemu().await;
    }

    fn alive(&self) -> bool {
        self.rec.pid.is_some_and(|p| !process::is_gone(p))
    }

    async fn wait_exit(&mut self, limit: Duration) -> bool {
        if let Some(c) = self.child.as_mut() {
            return tokio::time::timeout(limit, c.wait()).await.is_ok();
        }
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops QEMU: `quit` over QMP, then SIGKILL if it lingers.
    async fn stop_qemu(&mut self) {
        self.events = None;
        if let Some(q) = self.qmp.take() {
            let _ = q.execute(qapi::qmp::quit {}).await;
            if self.rec.power == PowerState::Stopping
                && self.rec.provisioning_state != ProvisioningState::Deleting
            {
                crate::failpoint::crash_point("stop.qemu_quit");
            }
        }
        let pid = self
            .rec
            .pid
            .filter(|p| process::pid_is_vm(*p, &self.rec.vm_id));
        if let Some(pid) = pid {
            if self.child.is_none() {
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
        self.diag.end_boot("stopped by vmnode");
    }

    /// Removes the VM and everything it owns. Each step tolerates a missing piece, so an
    /// interrupted delete can be run again.
    async fn delete(&mut self) -> Result<(), ActorError> {
        tracing::info!("deleting");
        self.rec.provisioning_state = ProvisioningState::Deleting;
        self.rec.power = PowerState::Stopping;
        self.publish();
        crate::failpoint::crash_point("delete.marked");
        self.stop_qemu().await;
        crate::failpoint::crash_point("delete.qemu_stopped");
        let net = self.node.net.clone();
        let tap = self.rec.nic.tap.clone();
        let tap_left = tokio::task::spawn_blocking(move || net.remove_tap(&tap)).await;
        match tap_left {
            Ok(Err(source)) => {
                return Err(ActorError::Net {
                    what: format!("cannot remove tap {}", self.rec.nic.tap),
                    source: Box::new(source),
                })
            }
            Err(e) => return Err(ActorError::Join(e)),
            Ok(Ok(())) => {}
        }
        crate::failpoint::crash_point("delete.tap_removed");
        let db = &self.node.db;
        let nic_key = self.rec.nic.key();
        // A NIC made for the VM goes with it (lease and address too); one the user made is
        // detached and keeps its address.
        let steps = if self.rec.nic.delete_with_vm {
            crate::net::addresses::release_nic(db, &self.rec.nic)
        } else {
            match db.get::<super::model::NicRecord>(Kind::Nic, &nic_key) {
                Ok(Some(mut n)) => {
                    n.vm.clear();
                    db.put(Kind::Nic, &nic_key, &n)
                }
                other => other.map(|_| ()),
            }
        };
        steps.map_err(|source| ActorError::Store {
            what: "cannot release the NIC",
            source,
        })?;
        crate::failpoint::crash_point("delete.nic_released");
        // The OS and data disk blobs go with the VM's lease id (the blob service refuses others).
        let keep_os_disk = self
            .rec
            .os_disk_delete_option
            .eq_ignore_ascii_case("Detach");
        let mut disks = vec![];
        if keep_os_disk {
            // Detach: the blob stays in the store, free of the VM's lease.
            if let Some(store) = crate::blob::node_store() {
                let _ = crate::blob::release_disk_lease(
                    &store,
                    &self.rec.os_disk_path,
                    &self.rec.vm_id,
                );
            }
        } else {
            disks.push(self.rec.os_disk_path.clone());
        }
        disks.extend(self.rec.data_disks.iter().map(|d| d.path.clone()));
        if let Some(store) = crate::blob::node_store() {
            for path in disks.iter().filter(|p| p.exists()) {
                if let Err(e) = crate::blob::delete_disk(&store, path, &self.rec.vm_id) {
                    tracing::warn!(error = %e, disk = %path.display(), "deleting a disk blob through the blob store");
                }
            }
        }
        crate::failpoint::crash_point("delete.disks_deleted");
        disks.push(self.rec.temp_disk.clone());
        disks.extend(self.rec.cloud_init_seed.clone());
        for path in &disks {
            if path.as_os_str().is_empty() {
                continue;
            }
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(ActorError::io(
                        format!("cannot delete {}", path.display()),
                        e,
                    ));
                }
            }
        }
        if let Some(d) = self.rec.temp_disk.parent() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir_all(&self.run.dir);
        if let Some(d) = self.rec.serial_log.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
        // Its extensions' records (`{rg}/{vm}/{name}`, extensions/) go with it.
        db.delete_prefix(Kind::Extension, &format!("{}/", self.rec.key()))
            .map_err(|source| ActorError::Store {
                what: "cannot remove the VM's extensions",
                source,
            })?;
        db.delete(Kind::Vm, &self.rec.key())
            .map_err(|source| ActorError::Store {
                what: "cannot remove the VM record",
                source,
            })?;
        crate::failpoint::crash_point("delete.record_removed");
        let _ = db.delete(Kind::DeleteIntent, &self.rec.key());
        self.node.forget(&self.rec.key());
        tracing::info!("deleted");
        Ok(())
    }
}
