//! Boot snapshots: new VMs resume a guest that has already booted instead of booting one.
//!
//! Under TCG the guest kernel's own boot is most of create → DHCP lease (3.3 s of 4.1 s for the
//! tiny image), and it is the same under every manager. So for an image whose init knows how
//! (manifest `bootSnapshot`), vmnode boots one guest per *shape* once, off the network, up to the
//! snapshot point in its init (`vmnode.template` on its command line: modules loaded, NIC down,
//! the disk's contents unread), saves its state with QEMU's own migration stream and stops it.
//! A later create of the same shape starts its QEMU with `-incoming fd:N` from that file, then
//! hands the guest its identity through the guest agent (`/run/vmnode/identity`: its MAC address,
//! the clock, fresh entropy). The guest sets its MAC and goes on as a cold boot does: DHCP from
//! the node's responder, agent, provisioning. QEMU's `vmgenid` device makes the copy reseed its
//! random number generator too.
//!
//! - **The shape is the key.** The QEMU argv with the VM's identity taken out (name, vmId, MAC;
//!   files are fds), the image files' sha256, the disks' sizes and the QEMU binary: anything
//!   else is another snapshot. Only a create boots from one (its OS disk is then the image's,
//!   as the snapshot's was); start, restart and redeploy boot cold.
//! - **Made in the background**, after the first create of a shape has booted, at the lowest
//!   CPU priority, in `state/snapshots/.making-*` and renamed into `state/snapshots/{key}` when
//!   complete, so a half-made snapshot is never used. At most [`KEEP`] are kept.
//! - **Never a guess.** A QEMU that cannot load the state, or a guest that does not take its
//!   identity, is a snapshot that is deleted; the VM then boots cold (a failed load starts a
//!   new QEMU, a silent guest is reset, which boots its kernel with its own command line).
//! - **The boot log is kept.** The snapshot's console up to its point is written into the VM's
//!   serial log first, then a line saying the guest resumed from it.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::catalog::ImageVersion;
use crate::config::VmRunDir;
use crate::qemu::argv::{self, Boot, Snapshot, VmSpec};
use crate::qemu::qga::{Agent, QgaError};
use crate::qemu::qmp::Qmp;
use crate::qemu::{jail, process};

/// Snapshots kept; the least recently used goes first.
pub const KEEP: usize = 8;
/// The MAC address a snapshot's guest boots with (every copy sets its own).
const SNAPSHOT_MAC: &str = "52:54:00:00:00:01";
/// What the guest prints at its snapshot point.
const READY_LINE: &str = "VMNODE-BOOT: template-ready";
/// How long a snapshot's guest may take to reach its point (a busy host, TCG).
const BOOT_LIMIT: Duration = Duration::from_secs(240);
/// How long a resumed guest's agent may take to answer.
pub const IDENTITY_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the snapshot's QEMU: {0}")]
    Qemu(String),
    #[error("the snapshot's guest did not reach its snapshot point within {0:?}")]
    NotReady(Duration),
    #[error("saving the snapshot's state failed: {0}")]
    Save(String),
    #[error("{free_mb} MiB free in {}: a snapshot of a {memory_mb} MiB guest is made only with its memory's size and 1 GiB to spare", dir.display())]
    NoRoom {
        dir: PathBuf,
        free_mb: u64,
        memory_mb: u64,
    },
    #[error("the resumed guest's agent: {0}")]
    Agent(#[from] QgaError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// A complete snapshot on disk.
#[derive(Clone, Debug)]
pub struct Saved {
    pub key: String,
    pub dir: PathBuf,
}

impl Saved {
    /// The migration stream QEMU resumes from.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.bin")
    }
    /// The snapshot guest's console up to its snapshot point.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

/// The node's boot snapshots.
pub struct Snapshots {
    dir: PathBuf,
    run: PathBuf,
    enabled: bool,
    /// Keys being made now, and keys whose making failed (not tried again until restart).
    busy: Mutex<HashSet<String>>,
    /// How the snapshot makers' QEMU is started (as every VM's).
    qemu: Arc<crate::qemu::host::QemuHost>,
}

impl Snapshots {
    /// `state_dir/snapshots`, with what a killed daemon left half-made removed (and the QEMU
    /// that was making it killed).
    pub fn new(
        state_dir: &Path,
        run_dir: &Path,
        enabled: bool,
        qemu: Arc<crate::qemu::host::QemuHost>,
    ) -> Arc<Snapshots> {
        let s = Snapshots {
            qemu,
            dir: state_dir.join("snapshots"),
            run: run_dir.join("snapshots"),
            enabled,
            busy: Mutex::new(HashSet::new()),
        };
        s.stop_makers();
        Arc::new(s)
    }

    /// Kills any QEMU making a snapshot (found by its run dir's pidfile and vmId) and removes
    /// what it was making: at start for a killed daemon's, at shutdown for our own.
    pub fn stop_makers(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.run) {
            for e in rd.flatten() {
                let d = VmRunDir::at(e.path());
                let id = std::fs::read_to_string(&d.vm_id).unwrap_or_default();
                let pid = process::read_pidfile(&d.pidfile)
                    .filter(|p| !id.is_empty() && process::pid_is_vm(*p, &id))
                    // A daemon killed between spawning it and writing its pidfile (the vm-id
                    // is written first): found by its UUID, as a VM's QEMU is at re-adoption.
                    .or_else(|| (!id.is_empty()).then(|| process::find_vm(&id)).flatten());
                if let Some(pid) = pid {
                    tracing::info!(pid, "killing the QEMU of a snapshot left half-made");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = std::fs::remove_dir_all(&d.dir);
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".making-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// The snapshot key of a VM about to be created from `image`, if it may use one.
    pub fn key_for(&self, spec: &VmSpec, image: &ImageVersion) -> Option<String> {
        let eligible = self.enabled
            && image.manifest.boot_snapshot
            && spec.boot == Boot::Kernel
            && spec.data_disks.is_empty()
            && spec.seed.is_none()
            // A guest started without its agent (a test switch) could never take its identity.
            && !spec.cmdline.split_whitespace().any(|w| w == "vmnode.noagent");
        eligible.then(|| key(spec, image))
    }

    /// The complete snapshot of `key`, if there is one (marked as just used).
    pub fn find(&self, key: &str) -> Option<Saved> {
        let dir = self.dir.join(key);
        let saved = Saved {
            key: key.to_string(),
            dir,
        };
        if !saved.state().is_file() {
            return None;
        }
        // The directory's mtime is its last use (`prune`).
        let _ = touch(&saved.dir);
        Some(saved)
    }

    /// Deletes a snapshot that failed to resume.
    pub fn discard(&self, key: &str) {
        let dir = self.dir.join(key);
        if dir.exists() {
            tracing::warn!(key, "discarding a boot snapshot");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Makes the snapshot of `key` on a task of its own, unless it exists, is being made, or
    /// failed before.
    pub fn make_later(self: &Arc<Self>, spec: VmSpec, image: ImageVersion, key: String) {
        if self.dir.join(&key).join("state.bin").is_file() {
            return;
        }
        if !self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        // The disks' sizes now, while the VM's disks exist (it may be deleted before this is done).
        let sizes = match disk_sizes(&spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot make a boot snapshot");
                return;
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match me.make(&spec, sizes, &image, &key).await {
                Ok(()) => {
                    tracing::info!(key, image = %image.urn(), secs = started.elapsed().as_secs_f64(), "boot snapshot made");
                    me.busy
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    me.prune();
                }
                // Left in `busy`: not tried again until the daemon restarts.
                Err(e) => {
                    tracing::warn!(key, error = %e, "making a boot snapshot failed; VMs of this shape boot cold")
                }
            }
        });
    }

    async fn make(
        &self,
        vm: &VmSpec,
        sizes: (u64, Option<u64>),
        image: &ImageVersion,
        key: &str,
    ) -> Result<(), SnapshotError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::fs::create_dir_all(&self.dir).map_err(io("cannot create", &self.dir))?;
        // The state file is at most the guest's memory; the VMs need the room more.
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| io("cannot statvfs", &self.dir)(e.into()))?;
        let free_mb = (st.blocks_available() as u64 * st.fragment_size() as u64) >> 20;
        if free_mb < vm.memory_mb + 1024 {
            return Err(SnapshotError::NoRoom {
                dir: self.dir.clone(),
                free_mb,
                memory_mb: vm.memory_mb,
            });
        }
        let tmp = self.dir.join(format!(".making-{key}-{nanos}"));
        let run = self.run.join(key);
        std::fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).map_err(io("cannot create", &run))?;
        let _ = std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let made = self
            .make_in(vm, sizes, image, key, &tmp, &VmRunDir::at(run.clone()))
            .await;
        let _ = std::fs::remove_dir_all(&run);
        match made {
            Ok(()) => {
                let dst = self.dir.join(key);
                if dst.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Ok(());
                }
                std::fs::rename(&tmp, &dst).map_err(io("cannot publish", &dst))?;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    async fn make_in(
        &self,
        vm: &VmSpec,
        (size, temp_len): (u64, Option<u64>),
        image: &ImageVersion,
        key: &str,
        tmp: &Path,
        run: &VmRunDir,
    ) -> Result<(), SnapshotError> {
        // The guest's own disks: the image's disk at the VM's size, an empty temp disk.
        let disk = tmp.join("os.raw");
        crate::storage::disk::sparse_clone(&image.disk(), &disk)
            .map_err(|e| SnapshotError::Qemu(format!("cloning the image's disk: {e}")))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .map_err(io("cannot open", &disk))?;
        f.set_len(size).map_err(io("cannot resize", &disk))?;
        let temp = match temp_len {
            Some(len) => {
                let p = tmp.join("resource.raw");
                let f = std::fs::File::create(&p).map_err(io("cannot create", &p))?;
                f.set_len(len).map_err(io("cannot size", &p))?;
                Some(p)
            }
            None => None,
        };
        let vm_id = uuid::Uuid::new_v4().to_string();
        std::fs::write(&run.vm_id, &vm_id).map_err(io("cannot write", &run.dir))?;
        let spec = VmSpec {
            name: format!("snapshot-{}", &key[..12]),
            vm_id,
            mac: SNAPSHOT_MAC.into(),
            disk,
            temp_disk: temp,
            serial_log: tmp.join("console.log"),
            qmp_socket: run.qmp.clone(),
            qga_socket: run.qga.clone(),
            pidfile: run.pidfile.clone(),
            snapshot: Some(Snapshot::Make),
            ..vm.clone()
        };
        let args = argv::build(&spec);
        let files =
            jail::open(&argv::passed(&spec)).map_err(|e| SnapshotError::Qemu(e.to_string()))?;
        // No tap: the NIC is on a hub port of its own; fd 3 is /dev/null.
        let nothing: std::os::fd::OwnedFd = std::fs::File::open("/dev/null")
            .map_err(io("cannot open", Path::new("/dev/null")))?
            .into();
        let mut child =
            process::spawn(&self.qemu, &args, &nothing, &files, &run.log, &spec.pidfile)
                .map_err(|e| SnapshotError::Qemu(e.to_string()))?;
        drop(files);
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let result = self.save(&spec, &mut child, pid, tmp).await;
        // Done or failed, this QEMU goes.
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        result?;
        for f in ["os.raw", "resource.raw"] {
            let _ = std::fs::remove_file(tmp.join(f));
        }
        let meta = json!({
            "key": key,
            "image": image.urn(),
            "cpus": spec.cpus,
            "memoryMB": spec.memory_mb,
            "made": crate::report::time_now(),
        });
        let p = tmp.join("snapshot.json");
        crate::storage::fsutil::write_atomic(&p, meta.to_string().as_bytes(), 0o600)
            .map_err(io("cannot write", &p))?;
        Ok(())
    }

    async fn save(
        &self,
        spec: &VmSpec,
        child: &mut tokio::process::Child,
        pid: i32,
        tmp: &Path,
    ) -> Result<(), SnapshotError> {
        let qmp = Qmp::connect_with_retry(&spec.qmp_socket, None, Duration::from_secs(30))
            .await
            .map_err(|e| SnapshotError::Qemu(e.to_string()))?;
        lowest_priority(pid);
        let deadline = std::time::Instant::now() + BOOT_LIMIT;
        loop {
            let text = std::fs::read(&spec.serial_log).unwrap_or_default();
            if memchr_find(&text, READY_LINE.as_bytes()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(SnapshotError::NotReady(BOOT_LIMIT));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SnapshotError::Qemu(format!(
                    "exited before its snapshot point: {status}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = tmp.join("state.bin");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&state)
            .map_err(io("cannot create", &state))?;
        let t = Duration::from_secs(10);
        let err = |e: crate::qemu::qmp::QmpError| SnapshotError::Save(e.to_string());
        qmp.execute_with_fd(
            "getfd",
            Some(json!({"fdname": "snapshot"})),
            file.as_fd(),
            t,
        )
        .await
        .map_err(err)?;
        // Stopped first: the saved guest is exactly where it stopped, and a copy starts paused
        // (the VM's actor continues it once its QMP is up).
        qmp.execute_raw("stop", None, t).await.map_err(err)?;
        qmp.execute_raw("migrate", Some(json!({"uri": "fd:snapshot"})), t)
            .await
            .map_err(err)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let r = qmp
                .execute_raw("query-migrate", None, t)
                .await
                .map_err(err)?;
            match r["status"].as_str() {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => {
                    return Err(SnapshotError::Save(
                        r["error-desc"].as_str().unwrap_or("failed").into(),
                    ))
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(SnapshotError::Save("not done within 120 s".into()))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        file.sync_all().map_err(io("cannot sync", &state))?;
        Ok(())
    }

    /// Keeps the [`KEEP`] most recently used snapshots.
    fn prune(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut all: Vec<(std::time::SystemTime, PathBuf)> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        all.sort();
        while all.len() > KEEP {
            let (_, old) = all.remove(0);
            tracing::info!(dir = %old.display(), "dropping the least recently used boot snapshot");
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// The snapshot key of a VM: its argv without its identity, the image's files, the disks' sizes
/// and the QEMU binary.
pub fn key(spec: &VmSpec, image: &ImageVersion) -> String {
    let shape = VmSpec {
        name: "snapshot".into(),
        vm_id: "00000000-0000-0000-0000-000000000000".into(),
        mac: SNAPSHOT_MAC.into(),
        snapshot: None,
        ..spec.clone()
    };
    let mut h = Sha256::new();
    for a in argv::build(&shape) {
        h.update(a.as_bytes());
        h.update([0]);
    }
    for (name, f) in &image.manifest.files {
        h.update(format!("{name}={}\0", f.sha256).as_bytes());
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    h.update(format!("disk={}\0", len(&spec.disk)).as_bytes());
    if let Some(t) = &spec.temp_disk {
        h.update(format!("temp={}\0", len(t)).as_bytes());
    }
    h.update(qemu_identity().as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The sizes of a VM's OS disk and temp disk.
fn disk_sizes(vm: &VmSpec) -> Result<(u64, Option<u64>), SnapshotError> {
    let len = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(io("cannot stat", p))
    };
    Ok((
        len(&vm.disk)?,
        vm.temp_disk.as_deref().map(len).transpose()?,
    ))
}

/// The QEMU binary as found on PATH: its path, size and change time.
fn qemu_identity() -> String {
    let bin = crate::doctor::QEMU_BIN;
    let path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    match path.and_then(|p| Some((std::fs::metadata(&p).ok()?, p))) {
        Some((m, p)) => {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}:{}", p.display(), m.size(), m.ctime())
        }
        None => bin.to_string(),
    }
}

/// Hands a resumed guest its identity: its MAC address, the time and fresh entropy, in
/// `/run/vmnode/identity`, which its init waits for (images/tiny/init).
pub async fn hand_identity(agent: &Agent, mac: &str) -> Result<(), SnapshotError> {
    let mut q = agent.connect(IDENTITY_LIMIT).await?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let seed: [u8; 32] = rand::random();
    let text = identity_text(mac, epoch, &seed);
    q.put_file("/run/vmnode/identity", text.as_bytes()).await?;
    Ok(())
}

fn identity_text(mac: &str, epoch: u64, seed: &[u8]) -> String {
    format!(
        "MAC={}\nEPOCH={epoch}\nSEED={}\nEND\n",
        mac.to_lowercase(),
        hex::encode(seed)
    )
}

/// Sets every thread of `pid` to niceness 19: the snapshot's boot uses only CPU nobody else wants.
fn lowest_priority(pid: i32) {
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                // SAFETY: setpriority has no memory effects; an error is ignored.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, tid, 19);
                }
            }
        }
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn touch(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    f.set_modified(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(kernel_sha: &str) -> ImageVersion {
        let m = json!({
            "publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "1.0.7",
            "boot": "pvh", "cmdline": "console=ttyS0", "kernelRelease": "6.1", "osType": "Linux",
            "files": {"vmlinux": {"sha256": kernel_sha, "size": 1}}, "builtAt": "now",
            "bootSnapshot": true,
        });
        ImageVersion {
            manifest: serde_json::from_value(m).unwrap(),
            dir: "/img".into(),
        }
    }

    fn spec(dir: &Path, name: &str, disk_len: u64) -> VmSpec {
        let disk = dir.join(format!("{name}.vhd"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(disk_len)
            .unwrap();
        VmSpec {
            name: name.into(),
            vm_id: uuid::Uuid::new_v4().to_string(),
            accel: crate::doctor::Accel::Tcg,
            cpus: 1,
            memory_mb: 1024,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/initrd.cpio".into(),
            cmdline: "console=ttyS0".into(),
            disk,
            temp_disk: None,
            hotplug_slots: 2,
            data_disks: vec![],
            caching: "ReadWrite".into(),
            mac: format!("00:0D:3A:00:00:{:02X}", name.len()),
            serial_log: dir.join(format!("{name}.log")),
            qmp_socket: dir.join(format!("{name}.qmp")),
            qga_socket: dir.join(format!("{name}.qga")),
            pidfile: dir.join(format!("{name}.pid")),
            boot: Boot::Kernel,
            seed: None,
            snapshot: None,
        }
    }

    /// tests/churn.rs found it: a daemon killed right after it forked a snapshot's QEMU, before
    /// the pidfile, left that QEMU running for good. The next daemon finds it by its vmId.
    #[test]
    fn a_snapshot_qemu_without_its_pidfile_is_found_by_its_vm_id_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let maker = run.join("snapshots").join("k");
        std::fs::create_dir_all(&maker).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::write(maker.join("vm-id"), &id).unwrap();
        // A stand-in QEMU: a shell named as QEMU, with the vmId among its arguments.
        let fake = dir.path().join(crate::doctor::QEMU_BIN);
        std::os::unix::fs::symlink("/bin/sh", &fake).unwrap();
        let mut child = std::process::Command::new(&fake)
            .args(["-c", "sleep 60; true", &id])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !process::pid_is_vm(pid, &id) {
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-in never ran"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Snapshots::new(&state, &run, true, crate::qemu::host::QemuHost::plain());
        let st = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{st}"
        );
        assert!(!maker.exists());
    }

    #[test]
    fn the_key_is_the_shape_not_the_vm() {
        let d = tempfile::tempdir().unwrap();
        let img = image("aa");
        let a = spec(d.path(), "a", 1 << 30);
        let b = spec(d.path(), "bee", 1 << 30);
        // Name, vmId, MAC and files differ: the same shape.
        assert_eq!(key(&a, &img), key(&b, &img));
        // Anything the guest has seen of its machine, disks or image is another shape.
        let other = |f: &dyn Fn(&mut VmSpec)| {
            let mut s = spec(d.path(), "c", 1 << 30);
            f(&mut s);
            key(&s, &img)
        };
        let k = key(&a, &img);
        assert_ne!(other(&|s| s.memory_mb = 2048), k);
        assert_ne!(other(&|s| s.cpus = 2), k);
        assert_ne!(other(&|s| s.hotplug_slots = 4), k);
        assert_ne!(other(&|s| s.cmdline = "console=ttyS0 quiet".into()), k);
        assert_ne!(other(&|s| s.caching = "None".into()), k);
        assert_ne!(key(&spec(d.path(), "e", 2 << 30), &img), k);
        assert_ne!(key(&a, &image("bb")), k);
    }

    #[test]
    fn only_a_create_of_an_image_that_knows_how_may_use_one() {
        let d = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let on = Snapshots::new(
            d.path(),
            run.path(),
            true,
            crate::qemu::host::QemuHost::plain(),
        );
        let off = Snapshots::new(
            d.path(),
            run.path(),
            false,
            crate::qemu::host::QemuHost::plain(),
        );
        let s = spec(d.path(), "a", 1 << 20);
        assert!(on.key_for(&s, &image("aa")).is_some());
        assert!(off.key_for(&s, &image("aa")).is_none());
        let mut plain = image("aa");
        plain.manifest.boot_snapshot = false;
        assert!(on.key_for(&s, &plain).is_none());
        let mut seeded = s.clone();
        seeded.seed = Some("/x/cidata.iso".into());
        assert!(on.key_for(&seeded, &image("aa")).is_none());
        let mut fw = s.clone();
        fw.boot = Boot::Firmware;
        assert!(on.key_for(&fw, &image("aa")).is_none());
        let mut mute = s.clone();
        mute.cmdline = "console=ttyS0 vmnode.noagent".into();
        assert!(on.key_for(&mute, &image("aa")).is_none());
        // A half-made snapshot is never found, and a killed daemon's is cleared at start.
        let k = on.key_for(&s, &image("aa")).unwrap();
        std::fs::create_dir_all(d.path().join("snapshots").join(&k)).unwrap();
        std::fs::create_dir_all(d.path().join("snapshots/.making-x")).unwrap();
        assert!(on.find(&k).is_none());
        let _ = Snapshots::new(
            d.path(),
            run.path(),
            true,
            crate::qemu::host::QemuHost::plain(),
        );
        assert!(!d.path().join("snapshots/.making-x").exists());
        std::fs::write(d.path().join("snapshots").join(&k).join("state.bin"), b"x").unwrap();
        assert_eq!(
            on.find(&k).unwrap().state(),
            d.path().join("snapshots").join(&k).join("state.bin")
        );
    }

    #[test]
    fn the_identity_file_ends_with_its_marker_and_has_no_shell_in_it() {
        let t = identity_text("00:0D:3A:01:02:03", 1_800_000_000, &[0xab; 4]);
        assert_eq!(
            t,
            "MAC=00:0d:3a:01:02:03\nEPOCH=1800000000\nSEED=abababab\nEND\n"
        );
    }
}
