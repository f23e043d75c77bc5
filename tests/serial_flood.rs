//! A guest flooding its serial console for minutes: the boot's stored log stays within its
//! bound (first and last MiB, a marker between), the spool QEMU writes takes no disk once read,
//! and the daemon's memory stays flat.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::Node;

const FLOOD: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_serial_flood_stays_within_its_bound_and_memory_stays_flat() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "flood", &[]);
    let id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log(
        "rg",
        "flood",
        "VMNODE-BOOT: ready",
        Duration::from_secs(120),
    );
    let daemon = node.daemon.as_ref().unwrap().id();

    let (code, out) = common::guest_exec(
        &node,
        &id,
        &[
            "/bin/sh",
            "-c",
            "yes 'vmnode serial flood 0123456789 abcdefghijklmnopqrstuvwxyz' >/dev/ttyS0 2>/dev/null </dev/null & echo flooding",
        ],
    );
    assert_eq!((code, out.trim()), (0, "flooding"));

    let started = Instant::now();
    let mut samples = vec![];
    while started.elapsed() < FLOOD {
        std::thread::sleep(Duration::from_secs(5));
        samples.push(rss_kib(daemon));
    }
    let files = common::walk(&node.state);
    let log = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".boot1.serialconsole.log"))
        .expect("the boot's log blob");
    let spool = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with("serial.spool"))
        .expect("the serial spool");
    let (log_md, spool_md) = (
        std::fs::metadata(log).unwrap(),
        std::fs::metadata(spool).unwrap(),
    );
    eprintln!(
        "flooded {} MiB in {FLOOD:?}; log {} bytes; spool {} bytes using {} KiB; RSS KiB {samples:?}",
        spool_md.len() / MIB,
        log_md.len(),
        spool_md.len(),
        spool_md.blocks() / 2
    );
    // The guest wrote well past the bound...
    assert!(
        spool_md.len() > 8 * MIB,
        "only {} bytes flooded",
        spool_md.len()
    );
    // ...the stored log kept within it...
    assert!(
        log_md.len() <= 3 * MIB + 256,
        "log is {} bytes",
        log_md.len()
    );
    // ...and what was read from the spool no longer takes disk.
    assert!(
        spool_md.blocks() * 512 <= 6 * MIB,
        "spool uses {} bytes of disk",
        spool_md.blocks() * 512
    );

    // The log says what was cut, keeps the boot's start, and ends with the latest output.
    let b = node.json(&["vm", "boot-diagnostics", "boots", "-g", "rg", "-n", "flood"]);
    let cur = b.as_array().unwrap().last().unwrap().clone();
    let (written, cut) = (
        cur["log"]["written"].as_u64().unwrap(),
        cur["log"]["cut"].as_u64().unwrap(),
    );
    assert!(
        written > 8 * MIB && cut > 4 * MIB,
        "{written} written, {cut} cut"
    );
    let text = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "flood",
    ]);
    assert!(text.starts_with("SeaBIOS") || text.contains("Linux version"));
    assert!(text.contains(&format!("{cut:>20} bytes of serial output cut here")));
    let end = &text[text.len().saturating_sub(300)..];
    assert!(
        end.contains("vmnode serial flood 0123456789 abcdefghijklmnopqrstuvwxyz"),
        "{end}"
    );
    // The pump kept up: the log holds nearly all the spool has.
    assert!(
        written + MIB >= spool_md.len(),
        "{written} of {}",
        spool_md.len()
    );

    // Memory stayed flat while the guest flooded (first sample taken 5 s in).
    let first = samples[0];
    let max = *samples.iter().max().unwrap();
    assert!(
        max <= first + 8 * 1024,
        "daemon RSS grew from {first} KiB to {max} KiB: {samples:?}"
    );
}
