//! A minimal qemu-guest-agent client over the VM's virtio-serial socket.
//!
//! The agent has no greeting: a session starts with `guest-sync-delimited` (the agent answers
//! after a 0xFF sentinel, flushing whatever a previous client left), then commands are one JSON
//! line each. Every call has a timeout; an agent that is not running simply times out.
//!
//! QEMU's agent chardev serves one client at a time, so a VM's sessions are serialised: each VM
//! has one [`Agent`] (made with the VM, kept in its handle) holding its socket's path and its
//! session lock, and a [`Qga`] session holds that lock until it is dropped (the boot probe,
//! graceful shutdown, provisioning, a resumed snapshot's identity and extensions all open their
//! sessions through the VM's `Agent` and never interleave). Two VMs' agents share nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// One VM's guest agent: its socket and its session lock (one session at a time).
#[derive(Debug)]
pub struct Agent {
    socket: PathBuf,
    session: Arc<tokio::sync::Mutex<()>>,
}

impl Agent {
    /// The agent on `socket` (the VM's `qga.sock`), with no session open.
    pub fn new(socket: PathBuf) -> Agent {
        Agent {
            socket,
            session: Arc::default(),
        }
    }

    /// Connects and synchronises with the agent, waiting (within `limit`) for another session
    /// of this VM to end.
    pub async fn connect(&self, limit: Duration) -> Result<Qga, QgaError> {
        let guard = tokio::time::timeout(limit, self.session.clone().lock_owned())
            .await
            .map_err(|_| QgaError::Busy)?;
        Qga::open(&self.socket, limit, guard).await
    }

    /// Like [`Agent::connect`] but fails with [`QgaError::Busy`] at once if another session is
    /// open (an agent in use is an agent that answers).
    pub async fn try_connect(&self, limit: Duration) -> Result<Qga, QgaError> {
        let guard = self
            .session
            .clone()
            .try_lock_owned()
            .map_err(|_| QgaError::Busy)?;
        Qga::open(&self.socket, limit, guard).await
    }
}

/// One session with a VM's agent; it holds the VM's session lock until dropped.
pub struct Qga {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    _session: OwnedMutexGuard<()>,
}

impl Qga {
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
        let mut q = Agent::new(sock)
            .connect(Duration::from_secs(5))
            .await
            .unwrap();
        let e = q
            .exec("/bin/true", &[], &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, QgaError::Restarted(_)), "{e:?}");
        drop(q);
        agent.await.unwrap();
    }

    #[tokio::test]
    async fn sessions_of_one_vm_are_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::new(dir.path().join("qga.sock"));
        let held = agent.session.clone().lock_owned().await;
        // Nobody answers on the socket, but the lock is what is tested: busy at once.
        assert!(matches!(
            agent.try_connect(Duration::from_millis(50)).await,
            Err(QgaError::Busy)
        ));
        assert!(matches!(
            agent.connect(Duration::from_millis(50)).await,
            Err(QgaError::Busy)
        ));
        drop(held);
        assert!(matches!(
            agent.try_connect(Duration::from_millis(50)).await,
            Err(QgaError::Connect(_))
        ));
    }

    /// A session holds its VM's lock (a second one on the same agent is Busy until it ends),
    /// while another VM's agent is free meanwhile.
    #[tokio::test]
    async fn two_vms_do_not_block_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let socks = [dir.path().join("a.sock"), dir.path().join("b.sock")];
        let mut agents = Vec::new();
        for s in &socks {
            let l = tokio::net::UnixListener::bind(s).unwrap();
            tokio::spawn(fake_agent(l));
            agents.push(Agent::new(s.clone()));
        }
        let t = Duration::from_secs(5);
        let a = agents[0].connect(t).await.unwrap();
        assert!(matches!(
            agents[0].try_connect(t).await,
            Err(QgaError::Busy)
        ));
        assert!(matches!(
            agents[0].connect(Duration::from_millis(50)).await,
            Err(QgaError::Busy)
        ));
        let b = agents[1].try_connect(t).await.unwrap();
        drop(b);
        drop(a);
        agents[0].try_connect(t).await.unwrap();
    }

    /// An agent that answers guest-sync-delimited, for as many clients as come.
    async fn fake_agent(listener: tokio::net::UnixListener) {
        use tokio::io::AsyncWriteExt;
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                    line.retain(|b| *b != 0xff);
                    let v: Value = serde_json::from_slice(&line).unwrap();
                    let mut out =
                        serde_json::to_vec(&json!({"return": v["arguments"]["id"]})).unwrap();
                    out.push(b'\n');
                    w.write_all(&out).await.unwrap();
                    line.clear();
                }
            });
        }
    }
}
