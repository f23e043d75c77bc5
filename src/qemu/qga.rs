//! A minimal qemu-guest-agent client over the VM's virtio-serial socket.
//!
//! The agent has no greeting: a session starts with `guest-sync-delimited` (the agent answers
//! after a 0xFF sentinel, flushing whatever a previous client left), then commands are one JSON
//! line each. Every call has a timeout; an agent that is not running simply times out.
//!
//! QEMU's agent chardev serves one client at a time, so sessions on one socket are serialised:
//! a [`Qga`] holds that socket's session lock until it is dropped (the boot probe, graceful
//! shutdown, provisioning and extensions all go through here and never interleave).

// Provisioning (vm/provision.rs) and extensions use exec/files/users; until they land:
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::OwnedMutexGuard;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// `guest-file-write` chunk (the agent's own limit on a command line is far higher).
const FILE_CHUNK: usize = 48 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("cannot reach the guest agent socket")]
    Connect(#[source] std::io::Error),
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("guest agent I/O")]
    Io(#[source] std::io::Error),
    #[error("guest agent error: {0}")]
    Agent(String),
    #[error("the guest agent is busy with another session")]
    Busy,
    #[error("guest command did not finish within {0:?}")]
    ExecTimeout(Duration),
    #[error("the guest agent restarted while the command ran (the guest rebooted?): {0}")]
    Restarted(String),
}

/// What a command run in the guest left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The agent cut the output at its limit (16 MiB).
    pub truncated: bool,
}

fn sessions() -> &'static Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>> {
    static S: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn session_lock(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = sessions().lock().unwrap_or_else(|e| e.into_inner());
    // Forget sockets nobody holds any more (VMs that are gone).
    map.retain(|_, l| Arc::strong_count(l) > 1);
    map.entry(path.to_path_buf()).or_default().clone()
}

pub struct Qga {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    _session: OwnedMutexGuard<()>,
}

impl Qga {
    /// Connects and synchronises with the agent, waiting (within `limit`) for another session
    /// on the same socket to end.
    pub async fn connect(path: &Path, limit: Duration) -> Result<Qga, QgaError> {
        let lock = session_lock(path);
        let guard = tokio::time::timeout(limit, lock.lock_owned())
            .await
            .map_err(|_| QgaError::Busy)?;
        Self::open(path, limit, guard).await
    }

    /// Like [`Qga::connect`] but fails with [`QgaError::Busy`] at once if another session is
    /// open (an agent in use is an agent that answers).
    pub async fn try_connect(path: &Path, limit: Duration) -> Result<Qga, QgaError> {
        let guard = session_lock(path)
            .try_lock_owned()
            .map_err(|_| QgaError::Busy)?;
        Self::open(path, limit, guard).await
    }

    async fn open(
        path: &Path,
        limit: Duration,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Qga, QgaError> {
        let stream = UnixStream::connect(path).await.map_err(QgaError::Connect)?;
        let (r, w) = stream.into_split();
        let mut q = Qga {
            reader: BufReader::new(r),
            writer: w,
            _session: guard,
        };
        let id: u32 = rand::random::<u32>() & 0x7fff_ffff;
        q.writer.write_all(&[0xff]).await.map_err(QgaError::Io)?;
        q.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            .await?;
        let wait = async {
            loop {
                let line = q.read_line().await?;
                if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                    if v["return"].as_u64() == Some(u64::from(id)) {
                        return Ok(());
                    }
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| QgaError::Timeout(limit))??;
        Ok(q)
    }

    async fn send(&mut self, v: &Value) -> Result<(), QgaError> {
        let mut line = serde_json::to_vec(v).map_err(|e| QgaError::Agent(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(QgaError::Io)
    }

    async fn read_line(&mut self) -> Result<String, QgaError> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .await
            .map_err(QgaError::Io)?;
        if n == 0 {
            return Err(QgaError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // The agent prefixes its guest-sync-delimited answer with the 0xFF sentinel.
        buf.retain(|b| *b != 0xff);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &mut self,
        name: &str,
        args: Option<Value>,
        limit: Duration,
    ) -> Result<Value, QgaError> {
        let mut cmd = json!({ "execute": name });
        if let Some(a) = args {
            cmd["arguments"] = a;
        }
        self.send(&cmd).await?;
        let wait = async {
            loop {
                let line = self.read_line().await?;
                let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                if let Some(e) = v.get("error") {
                    return Err(QgaError::Agent(
                        e["desc"].as_str().unwrap_or("error").to_string(),
                    ));
                }
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| QgaError::Timeout(limit))?
    }

    /// Asks the guest to power off. The agent does not answer this command on success.
    pub async fn shutdown(&mut self) -> Result<(), QgaError> {
        self.send(&json!({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}}))
            .await
    }

    /// Runs `path args…` in the guest (no shell unless `path` is one), feeding `input` on
    /// stdin, and waits up to `limit` for it to end. Output is captured separately.
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        env: &[String],
        input: Option<&[u8]>,
        limit: Duration,
    ) -> Result<ExecOutput, QgaError> {
        let mut a = json!({"path": path, "arg": args, "capture-output": true});
        if !env.is_empty() {
            a["env"] = json!(env);
        }
        if let Some(i) = input {
            a["input-data"] = json!(B64.encode(i));
        }
        let r = self
            .execute("guest-exec", Some(a), Duration::from_secs(10))
            .await?;
        let pid = r["pid"]
            .as_i64()
            .ok_or_else(|| QgaError::Agent(format!("guest-exec answered without a pid: {r}")))?;
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(20);
        loop {
            let st = self
                .execute(
                    "guest-exec-status",
                    Some(json!({ "pid": pid })),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| match e {
                    // The agent no longer knows the pid it gave: it restarted (the guest
                    // rebooted or powered off) while the command ran.
                    QgaError::Agent(d) if d.contains("'pid'") => QgaError::Restarted(d),
                    e => e,
                })?;
            if st["exited"] == true {
                return Ok(exec_output(&st));
            }
            if tokio::time::Instant::now() >= deadline {
                // Nothing in the protocol kills it; say so and let the caller report it.
                return Err(QgaError::ExecTimeout(limit));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Writes `data` to `path` in the guest (created or truncated), then sets its mode.
    pub async fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), QgaError> {
        let t = Duration::from_secs(10);
        self.put_file(path, data).await?;
        let mode = format!("{mode:o}");
        let out = self
            .exec("/bin/chmod", &[&mode, path], &[], None, t)
            .await?;
        if out.exit_code != Some(0) {
            return Err(QgaError::Agent(format!(
                "chmod {mode} {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Writes `data` to `path` in the guest (created or truncated, the agent's default mode).
    pub async fn put_file(&mut self, path: &str, data: &[u8]) -> Result<(), QgaError> {
        let t = Duration::from_secs(10);
        let h = self
            .execute(
                "guest-file-open",
                Some(json!({"path": path, "mode": "w"})),
                t,
            )
            .await?;
        let handle = h
            .as_i64()
            .ok_or_else(|| QgaError::Agent(format!("guest-file-open answered {h}")))?;
        let mut result = Ok(());
        for chunk in data.chunks(FILE_CHUNK) {
            let w = self
                .execute(
                    "guest-file-write",
                    Some(json!({"handle": handle, "buf-b64": B64.encode(chunk)})),
                    t,
                )
                .await;
            match w {
                Ok(v) if v["count"].as_u64() == Some(chunk.len() as u64) => {}
                Ok(v) => {
                    result = Err(QgaError::Agent(format!("short write to {path}: {v}")));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let closed = self
            .execute("guest-file-close", Some(json!({ "handle": handle })), t)
            .await;
        result?;
        closed?;
        Ok(())
    }

    /// Sets a user's password (`crypted`: already hashed, as /etc/shadow holds it).
    pub async fn set_user_password(
        &mut self,
        user: &str,
        password: &str,
        crypted: bool,
    ) -> Result<(), QgaError> {
        self.execute(
            "guest-set-user-password",
            Some(json!({"username": user, "password": B64.encode(password), "crypted": crypted})),
            Duration::from_secs(20),
        )
        .await
        .map(|_| ())
    }

    /// Adds keys to a user's `~/.ssh/authorized_keys` (made with the right owner and modes).
    pub async fn ssh_add_authorized_keys(
        &mut self,
        user: &str,
        keys: &[String],
    ) -> Result<(), QgaError> {
        self.execute(
            "guest-ssh-add-authorized-keys",
            Some(json!({"username": user, "keys": keys, "reset": false})),
            Duration::from_secs(20),
        )
        .await
        .map(|_| ())
    }
}

fn exec_output(st: &Value) -> ExecOutput {
    let dec = |k: &str| {
        st[k]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .unwrap_or_default()
    };
    ExecOutput {
        exit_code: st["exitcode"].as_i64().map(|c| c as i32),
        signal: st["signal"].as_i64().map(|c| c as i32),
        stdout: dec("out-data"),
        stderr: dec("err-data"),
        truncated: st["out-truncated"] == true || st["err-truncated"] == true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_status_is_decoded() {
        let st =
            json!({"exited": true, "exitcode": 3, "out-data": "aGVsbG8K", "err-data": "b29wcw=="});
        let o = exec_output(&st);
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.stdout, b"hello\n");
        assert_eq!(o.stderr, b"oops");
        assert!(!o.truncated);
        let st = json!({"exited": true, "signal": 9, "err-truncated": true});
        let o = exec_output(&st);
        assert_eq!((o.exit_code, o.signal, o.truncated), (None, Some(9), true));
    }

    /// An agent that no longer knows the pid of a running command (it restarted with the
    /// guest: QEMU's agent says "Invalid parameter 'pid'") is `Restarted`, not the command's
    /// own failure, so provisioning retries it at the agent's next answer.
    #[tokio::test]
    async fn a_pid_the_agent_forgot_is_a_restart() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let agent = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    break;
                }
                line.retain(|b| *b != 0xff); // the sync sentinel
                let v: Value = serde_json::from_slice(&line).unwrap();
                let reply = match v["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => json!({"return": v["arguments"]["id"]}),
                    "guest-exec" => json!({"return": {"pid": 412}}),
                    "guest-exec-status" => json!({"error": {"class": "GenericError",
                        "desc": "Invalid parameter 'pid'"}}),
                    other => panic!("unexpected {other}"),
                };
                let mut out = serde_json::to_vec(&reply).unwrap();
                out.push(b'\n');
                w.write_all(&out).await.unwrap();
            }
        });
        let mut q = Qga::connect(&sock, Duration::from_secs(5)).await.unwrap();
        let e = q
            .exec("/bin/true", &[], &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, QgaError::Restarted(_)), "{e:?}");
        drop(q);
        agent.await.unwrap();
    }

    #[tokio::test]
    async fn sessions_on_one_socket_are_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let l = session_lock(&sock);
        let held = l.clone().lock_owned().await;
        // Nobody answers on the socket, but the lock is what is tested: busy at once.
        assert!(matches!(
            Qga::try_connect(&sock, Duration::from_millis(50)).await,
            Err(QgaError::Busy)
        ));
        assert!(matches!(
            Qga::connect(&sock, Duration::from_millis(50)).await,
            Err(QgaError::Busy)
        ));
        drop(held);
        assert!(matches!(
            Qga::try_connect(&sock, Duration::from_millis(50)).await,
            Err(QgaError::Connect(_))
        ));
    }
}
