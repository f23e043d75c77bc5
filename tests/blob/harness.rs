//! A daemon for blob tests (its own state dir, run dir, ports and netns) and the Python venv
//! with the real azure-storage-blob SDK (`/var/cache/vmnode/venv`, made here if `.ci/run` did
//! not make it).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vmnode");
pub const VENV: &str = "/var/cache/vmnode/venv";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct BlobNode {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub run: PathBuf,
    pub netns: String,
    pub port: u16,
    pub blob_port: u16,
    daemon: Option<Child>,
}

impl BlobNode {
    pub fn start() -> BlobNode {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("vmnode-blob-")
            .tempdir()
            .unwrap();
        let mut node = BlobNode {
            state: dir.path().join("state"),
            run: dir.path().join("run"),
            netns: format!("vmnb-{}-{n}", std::process::id()),
            port: free_port(),
            blob_port: free_port(),
            dir,
            daemon: None,
        };
        node.spawn();
        node
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--netns", &self.netns])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--blob-listen")
            .arg(format!("127.0.0.1:{}", self.blob_port))
            .env("VMNODE_STATE_DIR", &self.state)
            .env("VMNODE_RUN_DIR", &self.run)
            .env("VMNODE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.blob_port)).is_ok()
                && self.run.join("vmnode.sock").exists()
            {
                return;
            }
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited ({st}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up: {}", self.log());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The node's account as the daemon wrote it for the CLI.
    pub fn account(&self) -> serde_json::Value {
        let dir = self.state.join("storage");
        let f = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .expect("an account file");
        serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap()
    }

    pub fn account_name(&self) -> String {
        self.account()["name"].as_str().unwrap().to_string()
    }

    pub fn blob_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.blob_port,
            self.account_name()
        )
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("VMNODE_STATE_DIR", &self.state)
            .env("VMNODE_RUN_DIR", &self.run)
            .env_remove("VMNODE_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap()
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

    pub fn connection_string(&self) -> String {
        self.ok(&["storage", "account", "show-connection-string"])
            .trim()
            .to_string()
    }

    /// Runs one section of tests/blob/sdk_test.py against this node; panics with its output
    /// unless every check passed.
    pub fn sdk(&self, section: &str) {
        self.sdk_with(section, &[]);
    }

    /// Like [`BlobNode::sdk`], with more environment for the script.
    pub fn sdk_with(&self, section: &str, env: &[(&str, &str)]) {
        let py = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/blob/sdk_test.py");
        let out = Command::new(py)
            .arg(&script)
            .arg(section)
            .env("VMNODE_CONN", self.connection_string())
            .env("VMNODE_BLOB_URL", self.blob_url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(
            out.status.success() && text.contains(" passed, 0 failed"),
            "SDK checks '{section}' failed:\n{text}\n===== daemon log (tail) =====\n{}",
            tail(&self.log(), 80)
        );
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for BlobNode {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// The venv's python, creating the venv (under a lock, tests run in parallel) if missing.
pub fn python() -> PathBuf {
    let py = Path::new(VENV).join("bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import azure.storage.blob"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return py;
    }
    std::fs::create_dir_all("/var/cache/vmnode").unwrap();
    let lock = std::fs::File::create("/var/cache/vmnode/venv.lock").unwrap();
    // SAFETY: flock on an open fd; released when `lock` is dropped.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if !ready() {
        let st = Command::new("python3")
            .args(["-m", "venv", VENV])
            .status()
            .expect("python3 (apt-get install python3-venv)");
        assert!(st.success(), "python3 -m venv {VENV} failed");
        let st = Command::new(Path::new(VENV).join("bin/pip"))
            .args(["install", "-q", "azure-storage-blob"])
            .status()
            .unwrap();
        assert!(st.success(), "pip install azure-storage-blob failed");
    }
    drop(lock);
    py
}
