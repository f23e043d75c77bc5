//! The QEMU process, independent of the daemon.
//!
//! QEMU is started in its own session (setsid), with the tap fd inherited as fd 3, its own
//! stdout/stderr going to `qemu.log` in the VM's run dir, and a pidfile there. Stopping or
//! killing the daemon therefore never stops a VM. After a restart the daemon re-adopts a VM by
//! reading the pidfile and checking `/proc/<pid>/cmdline` carries the VM's UUID.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::argv::TAP_FD;
use crate::doctor::QEMU_BIN;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {bin}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up ({status}): {log}")]
    EarlyExit { status: String, log: String },
    #[error("QEMU did not open its QMP socket within {0:?}")]
    NoQmp(Duration),
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Starts QEMU with `argv`, handing it `tap` as fd 3. Returns the child (the caller reaps it).
pub fn spawn(
    argv: &[String],
    tap: &OwnedFd,
    log: &Path,
) -> Result<tokio::process::Child, ProcessError> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ProcessError::Io {
            path: log.into(),
            source: e,
        })?;
    let logf2 = logf.try_clone().map_err(|e| ProcessError::Io {
        path: log.into(),
        source: e,
    })?;
    let tap_raw = tap.as_raw_fd();
    let mut cmd = tokio::process::Command::new(QEMU_BIN);
    cmd.args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (setsid, dup2, fcntl) on fds that are open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tap_raw != TAP_FD && libc::dup2(tap_raw, TAP_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears CLOEXEC on the new fd, but not when tap_raw already was TAP_FD.
            if libc::fcntl(TAP_FD, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| ProcessError::Spawn {
        bin: QEMU_BIN.into(),
        source: e,
    })
}

/// Waits for QEMU's QMP socket to accept a connection, failing early (with QEMU's own error
/// text) if the process exits first.
pub async fn wait_for_socket(
    child: &mut tokio::process::Child,
    socket: &Path,
    log: &Path,
    limit: Duration,
) -> Result<(), ProcessError> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(ProcessError::EarlyExit {
                status: status.to_string(),
                log: text
                    .trim()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | "),
            });
        }
        if socket.exists() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(ProcessError::NoQmp(limit));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// True if `pid` is alive and its command line carries `vm_id` (so it is this VM's QEMU, not a
/// recycled pid).
pub fn pid_is_vm(pid: i32, vm_id: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => {
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let is_qemu = args
                .first()
                .map(|a| a.ends_with(QEMU_BIN.as_bytes()))
                .unwrap_or(false);
            is_qemu && args.contains(&vm_id.as_bytes())
        }
        Err(_) => false,
    }
}

pub fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Is the process gone (or a zombie)?
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => true,
    }
}

/// Waits up to `limit` for `pid` to exit; then SIGKILLs it and waits a little more.
pub async fn ensure_dead(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(pid, "QEMU did not exit in time; sending SIGKILL");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for _ in 0..100 {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_pid_is_not_a_vm() {
        assert!(!super::pid_is_vm(std::process::id() as i32, "x"));
        assert!(super::is_gone(i32::MAX - 1));
    }
}
