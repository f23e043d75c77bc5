//! Commands in a guest through its qemu-guest-agent (`guest-exec` with captured output).
//!
//! Only "not ready yet" is retried: no socket, no answer to the sync, a connection that closes
//! (a guest rebooting). An error reply or a command that does not finish fails at once, with the
//! agent's answer: retrying it would only hide it for minutes. Every wait has a deadline that
//! bounds its inner calls too, and fails there with the last answer it had.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Node;

/// Why a guest command did not give an answer.
#[derive(Debug)]
pub enum ExecError {
    /// The agent cannot be asked yet (or just went away): worth asking again.
    NotReady(String),
    /// The agent answered with an error, or the command ran past the deadline: asking again
    /// would fail again.
    Failed(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::NotReady(m) => write!(f, "agent not ready: {m}"),
            ExecError::Failed(m) => write!(f, "guest command failed: {m}"),
        }
    }
}

/// How long one read from the agent may take at most (within the caller's deadline).
const READ_LIMIT: Duration = Duration::from_secs(20);
/// What a bare [`guest_exec`] allows: the sync and the command together.
const EXEC_LIMIT: Duration = Duration::from_secs(60);

/// Runs `argv` in the guest; (exit code, stdout + stderr). Panics if the agent does not answer
/// or the command fails to run within a minute.
pub fn guest_exec(node: &Node, vm_id: &str, argv: &[&str]) -> (i64, String) {
    try_guest_exec(node, vm_id, argv, Instant::now() + EXEC_LIMIT)
        .unwrap_or_else(|e| panic!("{argv:?} in {vm_id}: {e}"))
}

/// `guest_exec`, retried while the agent is not ready (it starts with the virtio port, before
/// the network is up) until `limit` has passed; any other failure panics at once.
pub fn exec_when_ready(node: &Node, vm_id: &str, argv: &[&str], limit: Duration) -> (i64, String) {
    exec_by(node, vm_id, argv, Instant::now() + limit)
        .unwrap_or_else(|e| panic!("{argv:?} in {vm_id} within {limit:?}: {e}"))
}

/// Runs `sh -c script` in the guest until its output satisfies `ok`; returns that run's exit
/// code and output. Panics at `limit` with the last output (or the agent's last failure).
pub fn wait_in_guest(
    node: &Node,
    vm_id: &str,
    script: &str,
    ok: impl Fn(&str) -> bool,
    limit: Duration,
) -> (i64, String) {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match exec_by(node, vm_id, &["/bin/sh", "-c", script], deadline) {
            Ok((code, out)) if ok(&out) => return (code, out),
            Ok(r) => last = Some(r),
            Err(e) => panic!("`{script}` in {vm_id}: {e}; the last output was {last:?}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("`{script}` in {vm_id}: not as wanted after {limit:?}; the last output (exit code, text) was {last:?}");
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
}

/// `try_guest_exec`, asked again every 2 s while the agent is not ready, until `deadline`.
fn exec_by(
    node: &Node,
    vm_id: &str,
    argv: &[&str],
    deadline: Instant,
) -> Result<(i64, String), ExecError> {
    loop {
        match try_guest_exec(node, vm_id, argv, deadline) {
            Err(ExecError::NotReady(m)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ExecError::NotReady(m));
                }
                std::thread::sleep(left.min(Duration::from_secs(2)));
            }
            r => return r,
        }
    }
}

/// One `guest-exec` of `argv` and its status polled to its end, all by `deadline`.
pub fn try_guest_exec(
    node: &Node,
    vm_id: &str,
    argv: &[&str],
    deadline: Instant,
) -> Result<(i64, String), ExecError> {
    use ExecError::{Failed, NotReady};
    let sock = node.run.join("vms").join(vm_id).join("qga.sock");
    let s = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(|e| NotReady(format!("{}: {e}", sock.display())))?;
    let mut w = s.try_clone().map_err(|e| NotReady(e.to_string()))?;
    let mut r = BufReader::new(s);
    // One JSON answer for which `want` holds (the agent may first send stale ones).
    let mut read = |want: &dyn Fn(&Value) -> bool| -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = left.min(READ_LIMIT).max(Duration::from_millis(50));
            r.get_ref()
                .set_read_timeout(Some(t))
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) => return Err("the agent's connection closed".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("no answer from the agent: {e}")),
            }
            buf.retain(|b| *b != 0xff);
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                if want(&v) {
                    return Ok(v);
                }
            }
        }
    };
    let id = std::process::id() as u64;
    let sync = serde_json::json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
    w.write_all(&[0xff])
        .and_then(|_| w.write_all(format!("{sync}\n").as_bytes()))
        .map_err(|e| NotReady(e.to_string()))?;
    read(&|v| v["return"] == id).map_err(NotReady)?;
    // The agent is up: from here on an error answer is the command's own.
    let mut call = |cmd: Value| -> Result<Value, ExecError> {
        w.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| NotReady(e.to_string()))?;
        let v =
            read(&|v| v.get("return").is_some() || v.get("error").is_some()).map_err(NotReady)?;
        match v.get("error") {
            Some(e) => Err(Failed(format!("the agent answered {e}"))),
            None => Ok(v),
        }
    };
    let args: Vec<&str> = argv[1..].to_vec();
    let v = call(
        serde_json::json!({"execute": "guest-exec", "arguments": {"path": argv[0], "arg": args, "capture-output": true}}),
    )?;
    let pid = v["return"]["pid"]
        .as_i64()
        .ok_or_else(|| Failed(format!("guest-exec gave no pid: {v}")))?;
    loop {
        let st =
            call(serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}))?;
        if st["return"]["exited"] == true {
            let dec = |k: &str| st["return"][k].as_str().map(b64).unwrap_or_default();
            return Ok((
                st["return"]["exitcode"].as_i64().unwrap_or(-1),
                format!("{}{}", dec("out-data"), dec("err-data")),
            ));
        }
        if Instant::now() >= deadline {
            return Err(Failed(format!("{argv:?} did not finish by its deadline")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = T.iter().position(|t| *t == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
