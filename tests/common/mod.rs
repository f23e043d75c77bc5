//! Test harness: each test gets its own daemon with its own state dir, run dir, port and
//! network namespace; guests are real QEMU under the node's accelerator choice. On failure
//! the harness prints every VM's serial log, QEMU log and QMP transcript.

#![allow(dead_code)]

pub mod agent;
pub mod consistency;
pub mod snapshots;

#[allow(unused_imports)]
pub use agent::{exec_when_ready, guest_exec, wait_in_guest};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const BIN: &str = env!("CARGO_BIN_EXE_vmnode");

pub struct Node {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub run: PathBuf,
    pub netns: String,
    pub port: u16,
    /// The blob service's port.
    pub blob_port: u16,
    pub daemon: Option<Child>,
    /// `off`, or a namespace the test made for the host end of the veth.
    pub host_netns: String,
    /// More `vmnode serve` arguments (e.g. `--nat-via IFACE`), used at every (re)start.
    pub serve_args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Node {
    /// A fresh daemon with the tiny image published in its store, run as users run it: boot
    /// snapshots on (the product's default), so the first VM of a shape boots cold and the node
    /// then makes the shape's snapshot in the background (a second QEMU, `vmnode.template`, for
    /// a few seconds); later VMs of that shape resume it (tests/boot_snapshot.rs).
    pub fn start() -> Node {
        Self::start_with_host_netns("off")
    }

    /// Like [`Node::start`] with `--boot-snapshots off`: every VM boots its kernel. Only for a
    /// test that must see a cold boot whatever ran before it, and says why where it calls this.
    pub fn start_cold() -> Node {
        Self::start_with("off", &["--boot-snapshots", "off"])
    }

    /// Like [`Node::start`], with the host end of the default vnet's veth in `host_netns`.
    pub fn start_with_host_netns(host_netns: &str) -> Node {
        Self::start_with(host_netns, &[])
    }

    /// Like [`Node::start_with_host_netns`], with more `vmnode serve` arguments.
    pub fn start_with(host_netns: &str, serve_args: &[&str]) -> Node {
        let mut node = Node::new(host_netns, serve_args);
        let out = node.cli(&["image", "build", "tiny"]);
        assert!(
            out.status.success(),
            "image build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node.spawn_daemon();
        node
    }

    /// Builds image recipe `name` (e.g. `debian-12`; cached in /var/cache/vmnode, so only the
    /// first build on a machine costs) and publishes it into this node's store, daemon running or
    /// not. Returns the URN with version `latest`.
    pub fn build_image(&self, name: &str) -> String {
        let urn = self.ok(&["image", "build", name]);
        let urn = urn.trim();
        let (base, _version) = urn.rsplit_once(':').expect("a URN");
        format!("{base}:latest")
    }

    /// Publishes a variant of the tiny image as `vmnode:{offer}:1:1.0.0`: the same files
    /// (hard links) booted with `extra` appended to its kernel command line.
    pub fn publish_variant(&self, offer: &str, extra: &str) -> String {
        self.publish_variant_with(offer, extra, &serde_json::json!({}))
    }

    /// Like [`Node::publish_variant`], with manifest fields replaced (e.g. `{"boot": "bzimage"}`).
    pub fn publish_variant_with(&self, offer: &str, extra: &str, patch: &Value) -> String {
        let tiny = self.state.join("images/vmnode/tiny/1");
        let src = std::fs::read_dir(&tiny)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let dst = self.state.join(format!("images/vmnode/{offer}/1/1.0.0"));
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(&src).unwrap().flatten() {
            if f.file_name() != "manifest.json" {
                std::fs::hard_link(f.path(), dst.join(f.file_name())).unwrap();
            }
        }
        let mut m: Value =
            serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
        m["offer"] = Value::from(offer);
        m["version"] = Value::from("1.0.0");
        let cmdline = format!("{} {extra}", m["cmdline"].as_str().unwrap());
        m["cmdline"] = Value::from(cmdline);
        for (k, v) in patch.as_object().unwrap() {
            m[k] = v.clone();
        }
        std::fs::write(dst.join("manifest.json"), m.to_string()).unwrap();
        format!("vmnode:{offer}:1:latest")
    }

    /// A fresh daemon without an image, for tests of the blob service and the API alone.
    pub fn start_bare() -> Node {
        let mut node = Node::new("off", &[]);
        node.spawn_daemon();
        node
    }

    /// A node whose daemon is not started yet (the test prepares its dirs first).
    pub fn new(host_netns: &str, serve_args: &[&str]) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("vmnode-test-")
            .tempdir()
            .unwrap();
        Node {
            netns: format!("vmnt-{}-{n}", std::process::id()),
            port: free_port(),
            blob_port: free_port(),
            state: dir.path().join("state"),
            run: dir.path().join("run"),
            dir,
            daemon: None,
            host_netns: host_netns.into(),
            serve_args: serve_args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn spawn_daemon(&mut self) {
        self.spawn_daemon_with_env(&[]);
    }

    /// Like [`Node::spawn_daemon`], with more environment (e.g. `FAILPOINTS`).
    pub fn spawn_daemon_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "serve",
                "--netns",
                &self.netns,
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .arg("--blob-listen")
            .arg(format!("127.0.0.1:{}", self.blob_port))
            // Tests never touch the host's namespace: no veth to it (see tests/host_access.rs).
            .args(["--host-netns", &self.host_netns])
            .args(&self.serve_args)
            .env("VMNODE_STATE_DIR", &self.state)
            .env("VMNODE_RUN_DIR", &self.run)
            .env("VMNODE_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.run.join("vmnode.sock").exists()
                && self.cli(&["group", "list"]).status.success()
            {
                return;
            }
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited ({st}): {}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up: {}", self.daemon_log());
    }

    /// Waits up to `limit` for the daemon to end on its own (a crash point); whether it did,
    /// and by which signal.
    pub fn daemon_died(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.daemon.as_mut()?.try_wait().unwrap() {
                self.daemon = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Restarts the daemon armed at crash point `point`, runs `vmnode args…`, and checks it died
    /// there, by SIGKILL, within `limit` (the daemon is left down: `spawn_daemon` brings it back).
    #[allow(dead_code)] // Used by the crash tests, not by every test binary.
    pub fn crash_at_point(&mut self, point: &str, args: &[&str], limit: Duration) {
        use std::os::unix::process::ExitStatusExt;
        self.kill_daemon();
        self.spawn_daemon_with_env(&[("FAILPOINTS", &format!("{point}=return"))]);
        let _ = self.cli(args);
        let st = self
            .daemon_died(limit)
            .unwrap_or_else(|| panic!("{point}: the daemon did not reach its crash point"));
        assert_eq!(st.signal(), Some(9), "{point}: died by {st}, not SIGKILL");
        assert!(
            self.daemon_log()
                .contains(&format!("vmnode: crash point {point}: SIGKILL")),
            "{point}: no crash point line in the log"
        );
    }

    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// Waits up to `limit` for the daemon's log to contain `needle` (a line logged after the
    /// daemon is ready, e.g. a re-adoption); panics with the log at the deadline.
    #[allow(dead_code)] // Not every test binary waits on the log.
    pub fn wait_for_daemon_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.daemon_log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no '{needle}' in the daemon log within {limit:?}:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().unwrap()
    }

    /// The `vmnode args…` command against this node, not started.
    pub fn cli_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("VMNODE_STATE_DIR", &self.state)
            .env("VMNODE_RUN_DIR", &self.run)
            .env_remove("VMNODE_URL")
            .env_remove("VMNODE_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "vmnode {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "vmnode {} should have failed but printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    /// `network vnet create` of `name` in `rg` with one address space and one subnet `s1`.
    #[allow(dead_code)]
    pub fn create_vnet(&self, rg: &str, name: &str, space: &str, subnet: &str) -> String {
        self.ok(&[
            "network",
            "vnet",
            "create",
            "-g",
            rg,
            "-n",
            name,
            "--address-prefixes",
            space,
            "--subnet-name",
            "s1",
            "--subnet-prefixes",
            subnet,
        ])
    }

    pub fn create_vm(&self, rg: &str, name: &str, extra: &[&str]) -> Value {
        self.create_vm_from("vmnode:tiny:1:latest", rg, name, extra)
    }

    /// Like [`Node::create_vm`], from image `urn`.
    pub fn create_vm_from(&self, urn: &str, rg: &str, name: &str, extra: &[&str]) -> Value {
        let mut a = create_args(urn, rg, name);
        a.extend(extra);
        self.json(&a)
    }

    /// Waits until the VM's serial log has a line containing `needle`; returns the log.
    /// The current boot's serial log.
    pub fn boot_log(&self, rg: &str, name: &str) -> String {
        self.ok(&[
            "vm",
            "boot-diagnostics",
            "get-boot-log",
            "-g",
            rg,
            "-n",
            name,
        ])
    }

    pub fn wait_for_log(&self, rg: &str, name: &str, needle: &str, limit: Duration) -> String {
        self.wait_for_count(rg, name, needle, 1, limit)
    }

    /// Waits until `needle` occurs at least `n` times in the VM's serial log; returns the log.
    pub fn wait_for_count(
        &self,
        rg: &str,
        name: &str,
        needle: &str,
        n: usize,
        limit: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        // Every kept boot's log: a restart or reboot starts a new one.
        let args = [
            "vm",
            "boot-diagnostics",
            "get-boot-log",
            "--all",
            "-g",
            rg,
            "-n",
            name,
        ];
        loop {
            let log = self.ok(&args);
            if log.matches(needle).count() >= n {
                return log;
            }
            if Instant::now() > deadline {
                panic!(
                    "'{needle}' not {n} times in the serial log of {name} after {limit:?}:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The QEMU pid of a VM, from its pidfile.
    pub fn qemu_pid(&self, vm_id: &str) -> i32 {
        std::fs::read_to_string(self.run.join("vms").join(vm_id).join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn links(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dump_artifacts(&self) {
        eprintln!("===== daemon log =====\n{}", self.daemon_log());
        for pattern in ["serialconsole.log", "qemu.log", "qmp.transcript"] {
            for f in walk(self.dir.path())
                .into_iter()
                .filter(|p| p.to_string_lossy().ends_with(pattern))
            {
                eprintln!(
                    "===== {} =====\n{}",
                    f.display(),
                    String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default())
                );
            }
        }
    }
}

/// A plain HTTP/1.1 GET (no SDK, no key, as a browser would): (status, headers, body).
pub fn http_get(url: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Pids of QEMU processes whose command line mentions `needle`, or which hold a file whose path
/// does (QEMU gets its disks and logs as fds, so its command line names no path: a test's dir is
/// found through `/proc/<pid>/fd`).
pub fn qemu_pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.starts_with("qemu-system")
                && (cmd.contains(needle) || holds_file_with(pid, needle))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// `vm create` of a Standard_B1s VM `name` in `rg` from image `urn`.
pub fn create_args<'a>(urn: &'a str, rg: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "vm",
        "create",
        "-g",
        rg,
        "-n",
        name,
        "--image",
        urn,
        "--size",
        "Standard_B1s",
    ]
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_artifacts();
        }
        self.kill_daemon();
        for pid in qemu_pids_with(&self.dir.path().to_string_lossy()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn holds_file_with(pid: i32, needle: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t.to_string_lossy().contains(needle)))
}

/// A Python with the given PyPI packages: one venv in the cache dir, shared by tests and runs,
/// made (or completed) under a lock. `.ci/run` prepares it; a test run alone makes it too.
pub fn python_with(packages: &[&str]) -> PathBuf {
    let venv = PathBuf::from("/var/cache/vmnode/venv");
    std::fs::create_dir_all("/var/cache/vmnode").unwrap();
    let script = format!(
        "set -e; [ -x {v}/bin/python ] || python3 -m venv {v}; {v}/bin/python -m pip install -q --disable-pip-version-check {p}",
        v = venv.display(),
        p = packages.join(" ")
    );
    let out = Command::new("flock")
        .args(["/var/cache/vmnode/venv.lock", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "venv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/python")
}

/// Runs `tests/sdk/{script}` as `script BASE_URL SUBSCRIPTION TOKEN CA` with a Python that has
/// `packages`, and asserts it succeeded and printed `ok_marker`.
pub fn run_sdk_script(node: &Node, packages: &[&str], script: &str, ok_marker: &str) {
    let python = python_with(packages);
    let tok = node.json(&["account", "get-access-token"]);
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .arg(path)
        .arg(format!("https://127.0.0.1:{}", node.port))
        .arg(tok["subscription"].as_str().unwrap())
        .arg(tok["accessToken"].as_str().unwrap())
        .arg(node.state.join("tls/ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(ok_marker),
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

/// A network namespace of the test's own, `{prefix}-{pid}` (deleted when dropped): the host end
/// of a vnet's veth (`serve --host-netns`), an uplink, a peer.
pub struct Netns(pub String);

impl Netns {
    /// Creates the namespace (`ip netns add`).
    pub fn add(prefix: &str) -> Netns {
        let ns = Netns(format!("{prefix}-{}", std::process::id()));
        let ok = Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {}", ns.0);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
