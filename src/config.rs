//! Where the daemon keeps things: the state dir (durable), the run dir (sockets, pids) and the
//! addresses it listens on. One `Paths` value is built at start and passed everywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/vmnode";
pub const DEFAULT_RUN_DIR: &str = "/run/vmnode";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
pub const DEFAULT_BLOB_LISTEN: &str = "127.0.0.1:7481";
pub const DEFAULT_NETNS: &str = "vmnode";
pub const LOCATION: &str = "local";
/// Where `vmnode image build` keeps downloaded packages and built images between runs.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/vmnode";

/// Every path the daemon and the CLI derive from the two roots.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    pub fn new(state: &Path, run: &Path) -> Self {
        Paths {
            state: state.to_path_buf(),
            run: run.to_path_buf(),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.state.join("vmnode.db")
    }
    pub fn token(&self) -> PathBuf {
        self.state.join("token")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.state.join("tls")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }
    pub fn images(&self) -> PathBuf {
        self.state.join("images")
    }
    /// Template deployment records: `deployments/{rg}/{name}.json`.
    pub fn deployments(&self) -> PathBuf {
        self.state.join("deployments")
    }
    /// Page-blob store: `blobs/{account}/{container}/{blob}`.
    pub fn blobs(&self) -> PathBuf {
        self.state.join("blobs")
    }
    pub fn socket(&self) -> PathBuf {
        self.run.join("vmnode.sock")
    }
    pub fn daemon_pid(&self) -> PathBuf {
        self.run.join("vmnode.pid")
    }
    /// What outbound NAT changed outside the daemon's namespace (`--nat-via`), to undo it.
    pub fn nat_record(&self) -> PathBuf {
        self.run.join("nat.json")
    }
    /// A VM's run dir: QMP and agent sockets, pidfile, QEMU's own log, the QMP transcript.
    pub fn vm_run(&self, vm_id: &str) -> PathBuf {
        self.run.join("vms").join(vm_id)
    }
    /// A VM's run dir and the files in it, named once.
    pub fn vm_run_dir(&self, vm_id: &str) -> VmRunDir {
        VmRunDir::at(self.vm_run(vm_id))
    }
}

/// What a QEMU's run dir holds (`run/vms/{vmId}/`, or a boot snapshot maker's
/// `run/snapshots/{key}/`): the one place these file names are spelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRunDir {
    pub dir: PathBuf,
    /// The QMP socket (the daemon listens, QEMU connects).
    pub qmp: PathBuf,
    /// The guest agent's socket.
    pub qga: PathBuf,
    /// QEMU's pidfile.
    pub pidfile: PathBuf,
    /// What the daemon said to QMP and heard back (`qemu/qmp/transcript.rs`).
    pub transcript: PathBuf,
    /// The command line QEMU was started with, as JSON.
    pub argv: PathBuf,
    /// QEMU's own stderr.
    pub log: PathBuf,
    /// The file QEMU's `screendump` writes (through an fd the daemon opens).
    pub screen: PathBuf,
    /// The vmId of a snapshot maker's QEMU (written before it is spawned).
    pub vm_id: PathBuf,
}

impl VmRunDir {
    pub fn at(dir: PathBuf) -> VmRunDir {
        VmRunDir {
            qmp: dir.join("qmp.sock"),
            qga: dir.join("qga.sock"),
            pidfile: dir.join("qemu.pid"),
            transcript: dir.join("qmp.transcript"),
            argv: dir.join("qemu.argv.json"),
            log: dir.join("qemu.log"),
            screen: dir.join("screen.ppm"),
            vm_id: dir.join("vm-id"),
            dir,
        }
    }
}

/// The daemon's settings from `vmnode serve`.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub paths: Paths,
    pub listen: SocketAddr,
    pub blob_listen: SocketAddr,
    pub netns: String,
    pub accel: crate::doctor::AccelChoice,
    pub platform_ip: std::net::Ipv4Addr,
    /// Where the host end of the veth to the default vnet goes: `None` for no veth, `Some("")`
    /// for the daemon's own (host) namespace, `Some(name)` for a namespace the caller made.
    pub host_netns: Option<String>,
    /// `--nat-via`: the uplink the vnets' outbound traffic is masqueraded through (none: no NAT).
    pub nat_via: Option<String>,
    /// `--dns-forwarder`: where the internal DNS sends names outside the vnets (none: REFUSED).
    pub dns_forwarder: Option<SocketAddr>,
    /// `--boot-snapshots`: new VMs of a shape seen before resume a saved boot (`vm/snapshot.rs`).
    pub boot_snapshots: bool,
    /// `--boot-screenshots`: the automatic boot screenshots (periodic and at milestones).
    pub boot_screenshots: bool,
    /// `--provision-timeout-secs`: how long OS provisioning waits for the guest's agent.
    pub provision_timeout: std::time::Duration,
    /// `--min-free-mb`: the state dir's free space below which new work is refused.
    pub min_free_mb: u64,
    /// `--qemu-user`: the unprivileged user QEMU runs as (made at start if missing).
    pub qemu_user: String,
    /// `--qemu-scope`: each QEMU in a systemd scope when systemd runs the host.
    pub qemu_scope: bool,
}
