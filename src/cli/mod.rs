//! The `vmnode` command line: `serve` runs the daemon, every other verb is a client of it.

mod bootdiag;
mod client;
mod commands;
mod deployment;
mod extension;
mod image;
mod network;
mod output;
mod quickstart;
mod storage;
mod viewer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Paths};
use crate::doctor::AccelChoice;

#[derive(Parser)]
#[command(
    name = "vmnode",
    version,
    about = "A host node manager: real QEMU guests, page-blob OS disks, its own DHCP, boot diagnostics",
    long_about = "vmnode runs QEMU guests on this Linux host the way a public cloud's node stack runs an IaaS VM.\n\n\
        Start here:\n  vmnode quickstart            install what is missing, build the tiny image, boot a VM\n  \
        vmnode doctor                check this host (QEMU, KVM or TCG, tun, bridge, netns)\n  \
        vmnode doctor --fix          install the Debian packages it lacks (QEMU pinned to one release)\n  \
        vmnode serve                 run the daemon (every other verb talks to it)\n\n\
        Then, az-style:\n  vmnode group create -n rg1\n  \
        vmnode vm create -g rg1 -n vm1 --image vmnode:tiny:1:latest --size Standard_DS1_v2\n  \
        vmnode vm show -g rg1 -n vm1\n  vmnode vm boot-diagnostics get-boot-log -g rg1 -n vm1\n  \
        vmnode vm delete -g rg1 -n vm1 --yes"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct Global {
    /// The daemon's state dir (token, CA, database, images, disks).
    #[arg(long, global = true, env = "VMNODE_STATE_DIR", default_value = config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The daemon's run dir (unix socket, VM sockets and pidfiles).
    #[arg(long, global = true, env = "VMNODE_RUN_DIR", default_value = config::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Where the daemon is: unix:/path/vmnode.sock or https://127.0.0.1:7480 (default: the run dir's socket).
    #[arg(long, global = true, env = "VMNODE_URL")]
    pub url: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: output::Format,
}

impl Global {
    pub fn paths(&self) -> Paths {
        Paths::new(&self.state_dir, &self.run_dir)
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Check this host and say what to install; `--fix` installs it.
    Doctor(commands::DoctorArgs),
    /// On a fresh host: install what is missing, build the tiny image, start the daemon, boot a VM.
    Quickstart(quickstart::QuickstartArgs),
    /// Access tokens and the node's subscription.
    #[command(subcommand)]
    Account(commands::AccountCmd),
    /// Resource groups.
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(commands::VmCmd),
    /// Virtual networks, NICs and DHCP leases.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Build, list, publish and unpublish guest images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// ARM template deployments (vnets, NICs, VMs, extensions from one JSON template).
    #[command(subcommand)]
    Deployment(deployment::DeploymentCmd),
    /// The node's blob service: accounts, containers, blobs, SAS, leases, disk check.
    #[command(subcommand)]
    Storage(storage::StorageCmd),
    /// The boot-diagnostics viewer (a page in the browser).
    #[command(subcommand)]
    Viewer(viewer::ViewerCmd),
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Management API (HTTPS).
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Blob service address (used in disk URIs).
    #[arg(long, default_value = config::DEFAULT_BLOB_LISTEN)]
    pub blob_listen: std::net::SocketAddr,
    /// The network namespace guests' bridges live in (created if missing).
    #[arg(long, default_value = config::DEFAULT_NETNS)]
    pub netns: String,
    /// Accelerator: auto picks KVM only on hardware KVM (kvm_intel/kvm_amd), else TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// The platform address: DHCP server identifier and DNS.
    #[arg(long, default_value = "168.63.129.16")]
    pub platform_ip: std::net::Ipv4Addr,
    /// The host reaches the default vnet through a veth whose host end (10.1.0.2/24) is in this
    /// namespace: `host` (the daemon's own), `off`, or the name of another namespace.
    #[arg(long, default_value = "host")]
    pub host_netns: String,
    /// Give guests outbound connectivity, masqueraded through this interface of the host (the
    /// one in the --host-netns namespace, if one is named). Off by default.
    #[arg(long, value_name = "IFACE")]
    pub nat_via: Option<String>,
    /// Answer names outside the vnets by asking this DNS server (IP or IP:PORT, port 53 if
    /// omitted), from the host. Off by default: such names are REFUSED.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_dns_forwarder)]
    pub dns_forwarder: Option<std::net::SocketAddr>,
    /// The daemon's scheduling niceness (-20..19). Below 0 by default so the API, the blob
    /// service and DHCP still answer while every core is busy with booting guests; QEMU itself
    /// is started at 0, as a hand-started one would be. 0 turns this off.
    #[arg(long, default_value_t = -5, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// The CPU weight of all guests together (cgroup v2 units, 1..10000; 100 is one ordinary
    /// process's worth; v1 shares are scaled from it). Without systemd every QEMU joins one cpu
    /// cgroup, `vmnode-guests`, so guests compete with the node's services as one entity, not
    /// one per vCPU: the API, blob service and DHCP keep their latency while guests use every
    /// core, and CPU the host does not use is still all the guests'. Under systemd QEMU goes
    /// to machine.slice instead. 0 leaves guests ungrouped.
    #[arg(long, default_value_t = crate::qemu::cgroup::DEFAULT_WEIGHT,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub guest_cpu_weight: u32,
    /// The daemon's own CPU weight (same units). Started in the root cgroup (no service manager
    /// placed it), the daemon moves into `vmnode-daemon`, beside the guests' group: there it
    /// does not share its login session's autogroup, one process's worth of CPU, with whatever
    /// else that session runs. Under systemd the unit's cgroup is kept. 0 leaves it where it
    /// started.
    #[arg(long, default_value_t = crate::qemu::cgroup::DEFAULT_DAEMON_WEIGHT,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub daemon_cpu_weight: u32,
    /// Boot snapshots. The first VM of a shape (image, size, disk sizes) boots cold; the node
    /// then boots one more guest of that shape in the background, at the lowest CPU priority,
    /// and saves it at the point in its init where nothing of a VM's own is used yet. Later
    /// creates of the shape resume that state and hand the guest its MAC, clock and entropy
    /// through its agent, skipping the kernel's boot (seconds under TCG). Only images that
    /// declare it (`bootSnapshot` in the manifest: the tiny image) and only at create; start,
    /// restart and redeploy always boot. Snapshots are kept in `state/snapshots`, at most 8.
    #[arg(long, value_enum, default_value = "on")]
    pub boot_snapshots: OnOff,
    /// Automatic boot screenshots, periodic and at boot milestones (on-demand ones always
    /// work). `off` is for measuring what they cost a boot (bench/diag.py).
    #[arg(long, env = "VMNODE_BOOT_SCREENSHOTS", default_value = "on", value_parser = parse_on_off,
          value_name = "on|off")]
    pub boot_screenshots: bool,
    /// How long OS provisioning waits for the guest's agent before the VM fails with
    /// OSProvisioningTimedOut (the cloud waits 20 minutes for a Linux VM).
    #[arg(long, env = "VMNODE_PROVISION_TIMEOUT_SECS", default_value_t = 20 * 60)]
    pub provision_timeout_secs: u64,
    /// Free space (MiB) the state dir must keep: below it creates, starts and blob writes are
    /// refused up front (running VMs are not touched).
    #[arg(long, env = "VMNODE_MIN_FREE_MB", default_value_t = crate::storage::health::MIN_FREE_MB)]
    pub min_free_mb: u64,
    /// The unprivileged system user QEMU runs as (made at start if missing, in group kvm where
    /// /dev/kvm exists).
    #[arg(long, env = "VMNODE_QEMU_USER", default_value = crate::qemu::jail::DEFAULT_USER)]
    pub qemu_user: String,
    /// Where systemd is PID 1 and systemd-run is installed, each QEMU runs in a scope of its own
    /// in machine.slice (`systemctl status`, `machinectl`); `off` keeps QEMU a plain child.
    #[arg(long, env = "VMNODE_QEMU_SCOPE", default_value = "on", value_parser = parse_on_off,
          value_name = "on|off")]
    pub qemu_scope: bool,
}

/// `on`/`off` as a flag or its environment variable says it (also true/false, yes/no, 1/0).
fn parse_on_off(s: &str) -> Result<bool, OnOffError> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(OnOffError(s.into())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not on or off")]
struct OnOffError(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Places the guests' group (with `guests_weight`) from where the daemon started, then moves
/// the daemon into its own (see `qemu::cgroup`); failing that it runs on where it is, with a
/// warning. Done on a thread of its own: moving a process between cgroups waits for an RCU grace
/// period (about 10 ms here), which the API need not wait for. The thread's answer is the
/// guests' group, which the daemon hands to every QEMU it starts.
fn join_daemon_group(guests_weight: u32, weight: u32) -> crate::daemon::GuestGroup {
    use crate::qemu::cgroup;
    let join = move || {
        let guests = cgroup::guests(guests_weight);
        if weight == 0 {
            return guests;
        }
        match cgroup::join_daemon_group(weight) {
            Ok(Some(dir)) => {
                tracing::info!(dir = %dir.display(), weight, "the daemon has a cpu cgroup of its own")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the daemon stays in its cpu cgroup: with no group of its own it shares its session's CPU share with everything else started there")
            }
        }
        guests
    };
    match std::thread::Builder::new()
        .name("cgroup".into())
        .spawn(join)
    {
        Ok(h) => crate::daemon::GuestGroup::Placing(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the thread that places the daemon's cpu cgroup");
            crate::daemon::GuestGroup::None
        }
    }
}

/// A VM as the verbs name it (`-g`/`-n`, as az does); used by `vm` and `vm boot-diagnostics`.
#[derive(clap::Args)]
pub struct VmId {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub rg: String,
    /// VM name.
    #[arg(short = 'n', long)]
    pub name: String,
}

fn parse_dns_forwarder(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| {
            format!("'{s}' is not an IP address or IP:PORT (e.g. 192.0.2.53 or 192.0.2.53:5353)")
        })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMNODE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut nice_error = None;
    if let Cmd::Serve(a) = &cli.cmd {
        // Niceness is per thread on Linux and inherited by the threads a thread creates: set
        // here, before the runtime starts any, it holds for all of the daemon's threads.
        // SAFETY: setpriority only changes this thread's scheduling priority.
        if a.nice != 0 && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, a.nice) } != 0 {
            nice_error = Some(std::io::Error::last_os_error());
        }
        // The daemon runs many threads (DHCP workers, blocking I/O); one malloc arena per
        // thread would multiply its resident memory for nothing. Two arenas serve it well.
        // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work (disk clones, netlink, nftables) is short; a small pool bounds memory.
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => {
                init_tracing();
                if let Some(e) = nice_error {
                    tracing::warn!(nice = a.nice, error = %e, "cannot set the daemon's niceness (needs CAP_SYS_NICE); it runs at the guests' priority");
                }
                let guests = join_daemon_group(a.guest_cpu_weight, a.daemon_cpu_weight);
                let cfg = config::DaemonConfig {
                    paths: cli.global.paths(),
                    listen: a.listen,
                    blob_listen: a.blob_listen,
                    netns: a.netns,
                    accel: a.accel,
                    platform_ip: a.platform_ip,
                    host_netns: match a.host_netns.as_str() {
                        "off" => None,
                        "host" => Some(String::new()),
                        other => Some(other.to_string()),
                    },
                    nat_via: a.nat_via,
                    dns_forwarder: a.dns_forwarder,
                    boot_snapshots: a.boot_snapshots == OnOff::On,
                    boot_screenshots: a.boot_screenshots,
                    provision_timeout: std::time::Duration::from_secs(a.provision_timeout_secs),
                    min_free_mb: a.min_free_mb,
                    qemu_user: a.qemu_user,
                    qemu_scope: a.qemu_scope,
                };
                crate::daemon::run(cfg, guests).await
            }
            Cmd::Doctor(a) => commands::doctor(a),
            Cmd::Quickstart(a) => quickstart::run(&cli.global, a).await,
            Cmd::Account(c) => commands::account(&cli.global, c).await,
            Cmd::Group(c) => commands::group(&cli.global, c).await,
            Cmd::Vm(c) => commands::vm(&cli.global, c).await,
            Cmd::Network(c) => network::run(&cli.global, c).await,
            Cmd::Image(c) => image::run(&cli.global, c).await,
            Cmd::Deployment(c) => deployment::run(&cli.global, c).await,
            Cmd::Storage(c) => storage::run(&cli.global, c).await,
            Cmd::Viewer(c) => viewer::run(&cli.global, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
