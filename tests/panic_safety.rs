//! Nothing one client sends can end the daemon (issue 18, R5), against a real daemon
//! (`Node::start_bare`: no image, no VM):
//! * a request whose handler panics (the test-only panic points of src/failpoint.rs, armed with
//!   `FAILPOINTS=api.panic=panic;blob.panic=panic`) is answered 500 in the cloud's error shape —
//!   the management API's JSON `InternalServerError`, the blob service's XML `InternalError` —
//!   and logged with its method and path; the next request is served by the same daemon process;
//!   a deployment whose resource's PUT panics fails with that error;
//! * with its RLIMIT_NOFILE lowered (`prlimit(2)`) until its accepts fail, the daemon backs off
//!   instead of spinning (under 10% of one core over 5 s) and serves again once descriptors are
//!   free.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Node;
use serde_json::{json, Value};

/// One HTTP/1.1 exchange with `Connection: close` over `s`: (status, head, body).
fn exchange<S: Read + Write>(
    mut s: S,
    method: &str,
    target: &str,
    auth: &str,
    body: &[u8],
) -> (u16, String, String) {
    let length = match method {
        "GET" => String::new(),
        _ => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
    };
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}{length}Connection: close\r\n\r\n"
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// A management API request over the daemon's unix socket, with its bearer token.
fn api(node: &Node, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
    let s = UnixStream::connect(node.run.join("vmnode.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let token = std::fs::read_to_string(node.state.join("token")).unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", token.trim());
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, body) = exchange(s, method, target, &auth, body.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An anonymous blob service request: (status, x-ms-error-code, body).
fn blob(node: &Node, target: &str) -> (u16, String, String) {
    let s = TcpStream::connect(("127.0.0.1", node.blob_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (status, head, body) = exchange(s, "GET", target, "", b"");
    let code = head
        .lines()
        .find_map(|l| l.strip_prefix("x-ms-error-code: "))
        .unwrap_or("")
        .to_string();
    (status, code, body)
}

/// The node's storage account, as the daemon wrote it for the CLI.
fn account_name(node: &Node) -> String {
    let f = std::fs::read_dir(node.state.join("storage"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .expect("an account file");
    let v: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
    v["name"].as_str().unwrap().to_string()
}

fn alive(node: &mut Node) -> u32 {
    let child = node.daemon.as_mut().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited: {}",
        node.daemon_log()
    );
    child.id()
}

#[test]
fn a_panicking_handler_is_a_500_and_the_daemon_serves_on() {
    let mut node = Node::new("off", &[]);
    node.spawn_daemon_with_env(&[("FAILPOINTS", "api.panic=panic;blob.panic=panic")]);
    let pid = alive(&mut node);

    // The management API: a storage account's PUT panics (every time), others are served.
    let (status, subs) = api(&node, "GET", "/subscriptions?api-version=2022-12-01", None);
    assert_eq!(status, 200, "{subs}");
    let sub = subs["value"][0]["subscriptionId"]
        .as_str()
        .unwrap()
        .to_string();
    let rg = format!("/subscriptions/{sub}/resourceGroups/rg1");
    let (status, body) = api(
        &node,
        "PUT",
        &format!("{rg}?api-version=2022-09-01"),
        Some(json!({"location": "local"})),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/acct1");
    let sku = json!({"location": "local", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"});
    for _ in 0..2 {
        let target = format!("{account}?api-version=2023-01-01");
        let (status, body) = api(&node, "PUT", &target, Some(sku.clone()));
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "InternalServerError", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("failpoint api.panic panic"), "{message}");
    }
    let (status, again) = api(&node, "GET", "/subscriptions?api-version=2022-12-01", None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["value"][0]["subscriptionId"],
        Value::from(sub.clone())
    );
    assert_eq!(alive(&mut node), pid);

    // A deployment whose resource's PUT panics fails with that 500, not "Running" forever.
    let mut resource = sku.clone();
    resource["type"] = json!("Microsoft.Storage/storageAccounts");
    resource["apiVersion"] = json!("2023-01-01");
    resource["name"] = json!("acct2");
    let deployment = format!("{rg}/providers/Microsoft.Resources/deployments/dep1");
    let target = format!("{deployment}?api-version=2022-09-01");
    let template = json!({"properties": {"mode": "Incremental", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0", "resources": [resource]}}});
    let (status, body) = api(&node, "PUT", &target, Some(template));
    assert!(status == 200 || status == 201, "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, d) = api(&node, "GET", &target, None);
        let state = d["properties"]["provisioningState"].as_str().unwrap_or("");
        if state == "Failed" || state == "Succeeded" {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the deployment is still {state}: {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["properties"]["provisioningState"], "Failed", "{done}");
    let error = done["properties"]["error"].to_string();
    assert!(error.contains("InternalServerError"), "{error}");
    assert_eq!(alive(&mut node), pid);

    // The blob service: Get Account Information panics, the next request is answered.
    let acct = account_name(&node);
    for _ in 0..2 {
        let (status, code, body) = blob(&node, &format!("/{acct}?restype=account&comp=properties"));
        assert_eq!((status, code.as_str()), (500, "InternalError"), "{body}");
        assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    }
    let (status, code, body) = blob(&node, &format!("/{acct}?comp=list"));
    assert!(
        (400..500).contains(&status) && body.contains("<Error>") && code != "InternalError",
        "{status} {code} {body}"
    );
    assert_eq!(alive(&mut node), pid);

    // One log line per panic, naming the request.
    let log = node.daemon_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request handler panicked"))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(lines[0].contains("/storageAccounts/acct1") && lines[0].contains("PUT"));
    assert!(lines[2].contains("/storageAccounts/acct2"), "{}", lines[2]);
    assert!(lines[4].contains(&format!("/{acct}")) && lines[4].contains("blob.panic"));
}

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion

/// The daemon's CPU time so far (user + system), in clock ticks (/proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); field 3 (state) is f[0].
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// Sets the soft RLIMIT_NOFILE of `pid`, keeping its hard limit; returns the old soft limit.
fn set_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call; a null `new` only
    // reads.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

fn wait_for_log(node: &Node, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !node.daemon_log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the daemon's log within {limit:?}: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn out_of_descriptors_the_daemon_backs_off_and_serves_again() {
    let mut node = Node::start_bare();
    let pid = alive(&mut node);
    // A few descriptors above what it holds now: the connections below take them.
    let old = set_nofile(pid, open_fds(pid) + 8);
    // Connections the daemon accepts until it cannot, then more that wait in the backlog, keeping
    // the blob listener readable while each accept fails with EMFILE.
    let mut conns = Vec::new();
    for _ in 0..64 {
        conns.push(TcpStream::connect(("127.0.0.1", node.blob_port)).unwrap());
    }
    wait_for_log(&node, "accept failed; backing off", Duration::from_secs(30));

    // A behaviour bound, not a speed figure: an accept loop that retries at once takes a whole
    // core here (EMFILE comes back at once and the listener stays readable); one that backs off
    // takes next to nothing. The bound is 10% of one core; this machine's noise is far
    // below it, so the assert cannot fail by accident but does fail on a spinning loop.
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(5));
    let (secs, used) = (
        t0.elapsed().as_secs_f64(),
        (cpu_ticks(pid) - c0) as f64 / hz,
    );
    let share = used / secs;
    eprintln!(
        "daemon CPU with accepts failing: {used:.2} s over {secs:.1} s = {:.1}% of one core",
        share * 100.0
    );
    assert!(
        share < 0.10,
        "the daemon spins: {:.1}% of one core",
        share * 100.0
    );
    assert_eq!(alive(&mut node), pid);

    // Descriptors free again: both APIs answer, the same process.
    set_nofile(pid, old);
    drop(conns);
    let out = node.cli(&["group", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acct = account_name(&node);
    let (status, _, body) = blob(&node, &format!("/{acct}?comp=list"));
    assert!(
        (400..500).contains(&status) && body.contains("<Error>"),
        "{status} {body}"
    );
    wait_for_log(&node, "accepting again", Duration::from_secs(10));
    assert_eq!(alive(&mut node), pid);
}
