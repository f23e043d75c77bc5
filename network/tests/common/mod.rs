//! Helpers shared by the namespace tests: namespaces that clean up after
//! themselves, and running commands.
//!
//! Every test makes its own namespaces (named with the test's tag, the pid
//! and a counter) and everything it creates lives inside them, so tests can
//! run in parallel and never touch the host's network.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use vmnode_network::plumbing::{delete_netns, ensure_netns, netns_path};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted when dropped (also when the test fails).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("vmnt-{tag}-{}-{n}", std::process::id());
        // Build the guard first so a half-made namespace is removed too.
        let ns = Netns { name };
        if let Err(e) = ensure_netns(&ns.name) {
            panic!(
                "cannot create network namespace {} (these tests need root): {e}",
                ns.name
            );
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.name) {
            eprintln!("cannot delete namespace {}: {e}", self.name);
        }
        assert!(
            std::thread::panicking() || !netns_path(&self.name).exists(),
            "namespace {} left behind",
            self.name
        );
    }
}

/// Runs a command and panics with its output if it fails; returns stdout.
pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip -n NS ARGS` (ARGS split at whitespace); returns stdout.
pub fn ip(ns: &str, args: &str) -> String {
    let mut cmd = vec!["ip", "-n", ns];
    cmd.extend(args.split_whitespace());
    run(&cmd)
}

/// `ip -n NS -j -d link show dev NAME` as JSON.
pub fn link_json(ns: &str, name: &str) -> serde_json::Value {
    let out = run(&["ip", "-n", ns, "-j", "-d", "link", "show", "dev", name]);
    let mut links: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ip -j output");
    links.remove(0)
}

/// IPv4 addresses (`a.b.c.d/len`) on a link.
pub fn link_addrs(ns: &str, name: &str) -> Vec<String> {
    let out = run(&["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", name]);
    let links: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ip -j output");
    links[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Runs `f` on a thread inside `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether one `busybox ping` from `ns` to `to` is answered within a second.
pub fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", to,
        ])
        .output()
        .unwrap()
        .status
        .success()
}
