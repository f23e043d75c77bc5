//! The boot flight recorder on real guests: per-boot serial logs, the screenshot series with
//! the screen's text, SAS links to the cloud-named blobs, and verdicts — for a healthy guest
//! and for guests broken on purpose (a kernel panic, no network, no agent).

mod common;

use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(120);

fn boots(node: &Node, vm: &str) -> Vec<Value> {
    let v = node.json(&["vm", "boot-diagnostics", "boots", "-g", "rg", "-n", vm]);
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("`boots` of {vm} is not a list: {v}"))
}

/// Waits until boot `n` is the current one and its verdict has `outcome`; returns it. Fails at
/// `limit` with the last list of boots, whatever it held (none at all, too).
fn wait_verdict(node: &Node, vm: &str, n: u64, outcome: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let bs = boots(node, vm);
        if let Some(b) = bs.last() {
            if b["n"] == n && b["verdict"]["outcome"] == outcome {
                return b.clone();
            }
        }
        if Instant::now() > deadline {
            panic!(
                "verdict of boot {n} of {vm} not {outcome} after {limit:?}; its boots: {}",
                serde_json::to_string_pretty(&bs).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn evidence(b: &Value) -> String {
    b["verdict"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_healthy_boot_is_recorded_and_its_links_work() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "good", &[]);
    let b = wait_verdict(&node, "good", 1, "booted", BOOT);
    assert_eq!(b["reason"], "create");
    assert_eq!(b["verdict"]["stage"], "booted");
    // The timeline merges every source, in time order.
    let events = b["events"].as_array().unwrap();
    for src in ["vmnode", "qmp", "serial", "dhcp", "agent"] {
        assert!(
            events.iter().any(|e| e["source"] == src),
            "no {src} entry in {events:#?}"
        );
    }
    let at: Vec<i64> = events.iter().map(|e| e["atMs"].as_i64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    let ev = evidence(&b);
    assert!(ev.contains("Linux version"), "{ev}");
    assert!(ev.contains("dhcp: ACK 10.1.0.4"), "{ev}");
    assert!(ev.contains("agent:"), "{ev}");
    // A screenshot series, identical frames collapsed, each frame a blob with a SAS link.
    let frames = b["frames"].as_array().unwrap();
    assert!(!frames.is_empty());
    let f = &frames[0];
    let (status, head, png) = common::http_get(f["uri"].as_str().unwrap());
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_lowercase().contains("content-type: image/png"),
        "{head}"
    );
    assert_eq!(&png[1..4], b"PNG");

    // retrieveBootDiagnosticsData: SAS links to the cloud-named blobs that work as they are.
    let uris = node.json(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log-uris",
        "-g",
        "rg",
        "-n",
        "good",
        "--expire",
        "5",
    ]);
    let log_uri = uris["serialConsoleLogBlobUri"].as_str().unwrap();
    let shot_uri = uris["consoleScreenshotBlobUri"].as_str().unwrap();
    assert!(
        log_uri.contains(".serialconsole.log?") && log_uri.contains("sig="),
        "{log_uri}"
    );
    assert!(shot_uri.contains(".screenshot.bmp?"), "{shot_uri}");
    let (status, _, log) = common::http_get(log_uri);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&log).contains("VMNODE-BOOT: ready"));
    let (status, _, bmp) = common::http_get(shot_uri);
    assert_eq!((status, &bmp[..2]), (200, &b"BM"[..]));
    // Without the SAS, a private container refuses; a tampered or wrong-blob link too.
    let bare = log_uri.split('?').next().unwrap();
    assert_eq!(
        common::http_get(bare).0,
        404,
        "anonymous read of a private container"
    );
    let tampered = log_uri.replace("sp=r", "sp=rw");
    assert_eq!(common::http_get(&tampered).0, 403);
    let other = log_uri.replace(".serialconsole.log?", ".screenshot.png?");
    assert_eq!(
        common::http_get(&other).0,
        403,
        "a link is for its own blob only"
    );
    // Made public (`blob` level), the container serves the same blob without a SAS.
    let container = bare.split('/').nth(4).unwrap().to_string();
    node.ok(&[
        "storage",
        "container",
        "set-permission",
        "-n",
        &container,
        "--public-access",
        "blob",
    ]);
    let (status, _, public) = common::http_get(bare);
    assert_eq!(status, 200, "anonymous read of a public container");
    assert!(String::from_utf8_lossy(&public).contains("VMNODE-BOOT: ready"));
    let bad = node.fails(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log-uris",
        "-g",
        "rg",
        "-n",
        "good",
        "--expire",
        "0",
    ]);
    assert!(bad.contains("1 to 1440"), "{bad}");

    // The instance view carries the URIs and the verdict.
    let iv = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", "good"]);
    let bd = &iv["bootDiagnostics"];
    assert!(
        bd["serialConsoleLogBlobUri"]
            .as_str()
            .unwrap()
            .ends_with(".serialconsole.log"),
        "{bd}"
    );
    assert_eq!(
        bd["vmnodeBootVerdict"]["verdict"]["outcome"], "booted",
        "{bd}"
    );

    // `get-boot-log --follow` prints the log as it grows, and the next boot's after a restart.
    let mut follow = std::process::Command::new(common::BIN)
        .args([
            "vm",
            "boot-diagnostics",
            "get-boot-log",
            "--follow",
            "-g",
            "rg",
            "-n",
            "good",
        ])
        .env("VMNODE_STATE_DIR", &node.state)
        .env("VMNODE_RUN_DIR", &node.run)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let followed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (out, followed) = (follow.stdout.take().unwrap(), followed.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut out = out;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                followed
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_followed = |needle: &str, n: usize| {
        let deadline = Instant::now() + BOOT;
        while followed.lock().unwrap().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "--follow never printed {n}× '{needle}':\n{}",
                followed.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_followed("VMNODE-BOOT: ready", 1);

    // A restart is a new boot with its own log; the first boot's log is kept as it was.
    node.ok(&["vm", "restart", "-g", "rg", "-n", "good"]);
    let b2 = wait_verdict(&node, "good", 2, "booted", BOOT);
    assert_eq!(
        (b2["n"].as_u64(), b2["reason"].as_str()),
        (Some(2), Some("restart"))
    );
    wait_followed("===== boot 2 =====", 1);
    wait_followed("VMNODE-BOOT: ready", 2);
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    let bs = boots(&node, "good");
    assert_eq!(bs[0]["endReason"], "reset");
    let first = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "good",
        "--boot",
        "1",
    ]);
    let current = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "good",
    ]);
    assert_eq!(first.matches("Linux version").count(), 1);
    assert_eq!(current.matches("Linux version").count(), 1);
    assert_ne!(first, current);
}

/// Creates a VM from a variant of the tiny image (without waiting for an address).
fn create_broken(node: &Node, name: &str, offer: &str, extra: &str) {
    create_broken_with(node, name, offer, extra, &serde_json::json!({}))
}

fn create_broken_with(node: &Node, name: &str, offer: &str, extra: &str, patch: &Value) {
    let urn = node.publish_variant_with(offer, extra, patch);
    node.ok(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        name,
        "--image",
        &urn,
        "--size",
        "Standard_B1s",
        "--ip-timeout",
        "0",
    ]);
}

/// Waits for a frame of the current boot whose screen text contains `needle`.
fn wait_frame(node: &Node, vm: &str, needle: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let bs = boots(node, vm);
        let found = bs.last().and_then(|b| {
            b["frames"].as_array().unwrap().iter().find(|f| {
                f["text"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|l| l.as_str().unwrap().contains(needle)))
            })
        });
        if let Some(f) = found {
            // The frame is a real picture behind its SAS link.
            let (status, _, png) = common::http_get(f["uri"].as_str().unwrap());
            assert_eq!((status, &png[1..4]), (200, &b"PNG"[..]));
            return f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no screenshot of {vm} shows '{needle}': {:#?}",
            bs.last().map(|b| &b["frames"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_kernel_panic_is_diagnosed_from_serial_and_screen() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    // No init anywhere: the kernel panics once it has unpacked the initramfs, before any
    // display driver is loaded (a PVH-booted kernel has no VGA text console of its own).
    create_broken(
        &node,
        "pan",
        "panic",
        "rdinit=/nonexistent init=/nonexistent",
    );

    let b = wait_verdict(&node, "pan", 1, "failed", BOOT);
    assert_eq!(b["verdict"]["stage"], "kernel", "{b:#}");
    let summary = b["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("Kernel panic - not syncing"), "{summary}");
    let ev = evidence(&b);
    assert!(
        ev.contains("serial: [") && ev.contains("Linux version"),
        "{ev}"
    );
    // Its screen never got past the firmware: the series shows that screen, frozen.
    wait_frame(&node, "pan", "Booting", BOOT);
    let deadline = Instant::now() + BOOT;
    let frozen = loop {
        let b = boots(&node, "pan").pop().unwrap();
        let e = evidence(&b);
        if e.contains("screen: screen frozen for") {
            break e;
        }
        assert!(Instant::now() < deadline, "no frozen screen flagged: {e}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(frozen.contains("Kernel panic"), "{frozen}");
}

#[test]
fn a_kernel_panic_shows_on_the_screen_when_the_kernel_keeps_the_vga_console() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    // The same panic, booted as a bzImage through the firmware's Linux loader: the kernel
    // starts on the VGA text console (vgacon), so the panic is drawn on the screen itself, and
    // read back with the VGA BIOS's glyphs.
    create_broken_with(
        &node,
        "panv",
        "panicvga",
        "rdinit=/nonexistent init=/nonexistent",
        &serde_json::json!({ "boot": "bzimage" }),
    );
    let f = wait_frame(&node, "panv", "Kernel panic - not syncing", BOOT);
    let text: Vec<&str> = f["text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let text = text.join("\n");
    // The panic's reason and its end marker are read off the screen, not only its first words.
    assert!(
        text.contains("end Kernel panic - not syncing:") && text.contains("Kernel Offset:"),
        "{text}"
    );
    let b = wait_verdict(&node, "panv", 1, "failed", BOOT);
    assert_eq!(b["verdict"]["stage"], "kernel", "{b:#}");
    let ev = evidence(&b);
    assert!(ev.contains("shows a kernel panic: "), "{ev}");
}

#[test]
fn a_guest_whose_network_never_comes_up_is_diagnosed() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    create_broken(&node, "nonet", "nonet", "vmnode.nonet");
    let b = wait_verdict(&node, "nonet", 1, "failed", BOOT);
    assert_eq!(b["verdict"]["stage"], "network", "{b:#}");
    let summary = b["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("no DHCP: not one packet"), "{summary}");
    let ev = evidence(&b);
    assert!(ev.contains("serial: network-down no-lease"), "{ev}");
    // Nothing from the guest's NIC reached the DHCP responder.
    assert!(!b["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == "dhcp"));
    wait_frame(&node, "nonet", "VMNODE-BOOT: network-down no-lease", BOOT);
}

#[test]
fn a_guest_without_its_agent_is_diagnosed() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    create_broken(&node, "noagent", "noagent", "vmnode.noagent");
    let b = wait_verdict(&node, "noagent", 1, "failed", BOOT);
    assert_eq!(b["verdict"]["stage"], "agent", "{b:#}");
    let summary = b["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("guest agent did not answer"), "{summary}");
    // It got as far as an address: the evidence shows the DHCP ACK.
    assert!(evidence(&b).contains("dhcp: ACK"), "{}", evidence(&b));
    // The screen shows the guest waiting at its login prompt.
    let f = wait_frame(&node, "noagent", "login:", BOOT);
    assert_eq!(f["shows"], "login", "{f:#}");
}

#[test]
fn serial_capture_survives_a_daemon_kill_without_loss_or_duplicates() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.ok(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "k",
        "--image",
        "vmnode:tiny:1:latest",
        "--size",
        "Standard_B1s",
        "--ip-timeout",
        "0",
    ]);
    // Killed while the guest boots: QEMU keeps writing its spool with nobody reading it.
    node.wait_for_log("rg", "k", "Linux version", BOOT);
    node.kill_daemon();
    std::thread::sleep(Duration::from_secs(6));
    node.spawn_daemon();
    wait_verdict(&node, "k", 1, "booted", BOOT);
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "k",
    ]);
    // Every milestone once, in order: nothing lost while the daemon was away, nothing copied
    // twice when it came back.
    let mut at = 0;
    for m in [
        "Linux version",
        "VMNODE-BOOT: init",
        "VMNODE-BOOT: dhcp-bound",
        "VMNODE-BOOT: ready",
    ] {
        assert_eq!(log.matches(m).count(), 1, "{m} in:\n{log}");
        let i = log.find(m).unwrap();
        assert!(i >= at, "{m} out of order in:\n{log}");
        at = i;
    }
    assert_eq!(boots(&node, "k").len(), 1);
}
