//! Boot snapshots as a test sees them (src/vm/snapshot.rs): the snapshots a node has made, the
//! QEMU making one (`vmnode.template` on its kernel command line), and whether a VM's QEMU
//! resumed one (`-incoming fd:N`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{qemu_pids_with, Node};

/// How long a snapshot may take to be made after its shape's first VM booted (TCG, a busy
/// 2-core host; the node itself gives its snapshot guest 240 s to reach its point).
pub const MAKE_LIMIT: Duration = Duration::from_secs(300);

/// `/proc/<pid>/cmdline`, its arguments joined by spaces ("" for a process that is gone).
pub fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// Whether QEMU `pid` was started from a boot snapshot.
pub fn resumed(pid: i32) -> bool {
    cmdline(pid).contains(" -incoming fd:")
}

/// The node's complete snapshots (their `state.bin`).
pub fn made(node: &Node) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(node.state.join("snapshots")) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path().join("state.bin"))
        .filter(|p| p.is_file())
        .collect()
}

/// Snapshots being made now (`state/snapshots/.making-*`).
pub fn half_made(node: &Node) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(node.state.join("snapshots")) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".making-"))
        .map(|e| e.path())
        .collect()
}

/// The node's QEMU processes that are making a snapshot.
pub fn makers(node: &Node) -> Vec<i32> {
    qemu_pids_with(&node.dir.path().to_string_lossy())
        .into_iter()
        .filter(|p| cmdline(*p).contains("vmnode.template"))
        .collect()
}

/// Waits for the first snapshot QEMU of the node to run; its pid.
pub fn wait_for_maker(node: &Node) -> i32 {
    let deadline = Instant::now() + MAKE_LIMIT;
    loop {
        if let Some(p) = makers(node).first() {
            return *p;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot QEMU started within {MAKE_LIMIT:?}: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a snapshot bigger than `bigger_than` bytes is complete; its `state.bin`.
pub fn wait_for_snapshot(node: &Node, bigger_than: u64) -> PathBuf {
    let deadline = Instant::now() + MAKE_LIMIT;
    loop {
        if let Some(p) = made(node)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > bigger_than))
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no boot snapshot made within {MAKE_LIMIT:?}: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the node is making no snapshot (none half-made, no snapshot QEMU): for a test
/// that wants the host's CPU to itself before a heavy step, or an exact count of QEMUs.
pub fn wait_idle(node: &Node) {
    let deadline = Instant::now() + MAKE_LIMIT;
    while !(makers(node).is_empty() && half_made(node).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "a boot snapshot still being made after {MAKE_LIMIT:?}: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
