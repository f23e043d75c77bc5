//! A minimal qemu-guest-agent client over the VM's virtio-serial socket.
//!
//! The agent has no greeting: a session starts with `guest-sync-delimited` (the agent answers
//! after a 0xFF sentinel, flushing whatever a previous client left), then commands are one JSON
//! line each. Every call has a timeout; an agent that is not running simply times out.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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
}

pub struct Qga {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qga {
    /// Connects and synchronises with the agent.
    pub async fn connect(path: &Path, limit: Duration) -> Result<Qga, QgaError> {
        let stream = UnixStream::connect(path).await.map_err(QgaError::Connect)?;
        let (r, w) = stream.into_split();
        let mut q = Qga {
            reader: BufReader::new(r),
            writer: w,
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
    #[allow(dead_code)] // for the agent-status and extension work that follows
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
}
