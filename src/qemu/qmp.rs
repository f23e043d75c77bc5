//! Thin, typed QMP (QEMU Machine Protocol) client over our own transport.
//!
//! The `qapi` crate is used only for its generated command and return types
//! ([`qapi::Command`] supplies `NAME` and the `Ok` type). Its stream machinery
//! is not used: it is generated from a newer QEMU schema and ends the whole
//! connection on the first event it does not know (arcnmx/qapi-rs#17).
//!
//! How it works:
//! - One background reader task owns the read half of the unix socket. Every
//!   command carries a numeric `id`, and replies are matched to waiting callers
//!   through a map of oneshot senders, so replies may come back in any order.
//! - Lines with an `"event"` key go, untyped, to a broadcast channel
//!   ([`Qmp::events`]). Lines that can't be parsed or aren't expected are
//!   logged and skipped. They never end the connection.
//! - Writes go through a mutex around the write half, one JSON object per
//!   line. Each write runs in its own task, so a caller's timeout can't leave
//!   half a line on the socket.
//! - Every command has a timeout ([`timeout_for`]). A command that times out
//!   removes its pending entry, and a late reply is dropped. When the socket
//!   closes (QEMU exited), all pending commands fail with
//!   [`QmpError::Closed`], which is distinct from [`QmpError::Timeout`] (QEMU
//!   alive but slow), and [`Qmp::closed`] resolves.
//! - Optionally, every line sent and received is appended with a timestamp
//!   to a transcript file for each VM. This is best effort.
//!
//! Dropping the last [`Qmp`] handle stops the reader task and closes the socket.

// The client is wider than what the walking skeleton calls yet (events, version, retries
// feed the lifecycle and diagnostics work); keep it whole rather than trim and regrow it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

/// Bound on the whole connect + greeting + `qmp_capabilities` handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for `query-*` commands.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout for commands without a specific entry in [`timeout_for`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for commands that may do real work (device/block hotplug, screendump).
pub const SLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Events buffered per subscriber before it starts seeing `RecvError::Lagged`.
const EVENT_CAPACITY: usize = 1024;
/// Pause between connection attempts in [`Qmp::connect_with_retry`].
const RETRY_DELAY: Duration = Duration::from_millis(50);
/// Cap on how much of a bad line is repeated in logs and errors.
const LOG_SNIPPET: usize = 200;

/// The per-command timeout table, keyed by QMP command name.
pub fn timeout_for(command: &str) -> Duration {
    match command {
        "qmp_capabilities" => QUERY_TIMEOUT,
        c if c.starts_with("query-") || c.starts_with("x-query-") => QUERY_TIMEOUT,
        "device_add"
        | "device_del"
        | "blockdev-add"
        | "blockdev-del"
        | "blockdev-reopen"
        | "blockdev-snapshot-sync"
        | "blockdev-snapshot-internal-sync"
        | "block_resize"
        | "object-add"
        | "object-del"
        | "netdev_add"
        | "netdev_del"
        | "chardev-add"
        | "chardev-remove"
        | "screendump"
        | "human-monitor-command" => SLOW_TIMEOUT,
        _ => DEFAULT_TIMEOUT,
    }
}

/// Errors from the QMP client. Messages are short, and the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// I/O error on the socket other than a disconnect.
    #[error("QMP I/O error")]
    Io {
        #[source]
        source: io::Error,
    },
    /// The unix socket could not be connected (QEMU not up yet, or gone).
    #[error("cannot connect to QMP socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// QEMU is alive (socket open) but did not answer in time.
    #[error("QMP {command} timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    /// The socket is closed: QEMU exited or closed the monitor.
    #[error("QMP connection closed")]
    Closed,
    /// QEMU answered with an `"error"` reply.
    #[error("QMP {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// The peer does not speak QMP as we expect (bad greeting, ...).
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// The command's arguments could not be serialized.
    #[error("cannot encode QMP {command} arguments")]
    Encode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// The `"return"` value did not match the expected type.
    #[error("cannot decode QMP {command} reply")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

impl QmpError {
    /// True if the error means the connection is gone (QEMU exited).
    pub fn is_closed(&self) -> bool {
        matches!(self, QmpError::Closed)
    }
}

/// One asynchronous QMP event, untyped so that unknown events and fields are harmless.
#[derive(Debug, Clone)]
pub struct QmpEvent {
    /// Event name, e.g. `"SHUTDOWN"`.
    pub name: String,
    /// The event's `data` member, or an empty object if QEMU sent none.
    pub data: Value,
    /// `(seconds, microseconds)` as sent by QEMU, if present.
    pub timestamp: Option<(i64, i64)>,
}

impl QmpEvent {
    /// Decode into a typed `qapi` event if the name matches, e.g.
    /// `ev.parse::<qapi::qmp::SHUTDOWN>()`. Returns `None` for other events.
    pub fn parse<E: qapi::Event>(&self) -> Option<Result<E, serde_json::Error>> {
        (self.name == E::NAME).then(|| E::deserialize(&self.data))
    }
}

/// Cheap, cloneable handle to one QMP connection.
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
    greeting: Value,
    version: Option<qapi::qmp::VersionInfo>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader owns the read half; stopping it closes the socket.
        self.reader.abort();
    }
}

/// State shared between handles and the reader task. It holds no socket
/// halves, so the reader never keeps the connection alive on its own.
struct Shared {
    path: PathBuf,
    pending: Mutex<Pending>,
    /// Taken (set to `None`) on close so that subscribers see `RecvError::Closed`.
    events: Mutex<Option<broadcast::Sender<QmpEvent>>>,
    closed: watch::Sender<bool>,
    transcript: Option<Transcript>,
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    closed: bool,
}

type Reply = Result<Value, ErrorReply>;

struct ErrorReply {
    class: String,
    desc: String,
}

#[derive(Serialize)]
struct Request<'a> {
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a Value>,
    id: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Qmp {
    /// Connect to a QMP unix socket, read the greeting, send `qmp_capabilities`.
    /// The whole handshake is bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(path: &Path, transcript: Option<PathBuf>) -> Result<Qmp, QmpError> {
        Self::connect_timeout(path, transcript, HANDSHAKE_TIMEOUT).await
    }

    /// [`Qmp::connect`] with an explicit bound on the whole handshake.
    ///
    /// QEMU serves one QMP client per socket at a time, so a handshake timeout
    /// can also mean that another client is still connected.
    pub async fn connect_timeout(
        path: &Path,
        transcript: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Qmp, QmpError> {
        match tokio::time::timeout(timeout, Self::handshake(path, transcript)).await {
            Ok(result) => result,
            Err(_) => Err(QmpError::Timeout {
                command: "handshake".to_owned(),
                after: timeout,
            }),
        }
    }

    /// Like [`Qmp::connect`], but keep retrying while the socket cannot be
    /// connected (QEMU just spawned and not listening yet), up to `total`.
    /// Errors other than [`QmpError::Connect`] are returned at once.
    pub async fn connect_with_retry(
        path: &Path,
        transcript: Option<PathBuf>,
        total: Duration,
    ) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + total;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = Self::connect_timeout(path, transcript.clone(), left).await;
            match attempt {
                Err(QmpError::Connect { .. }) if Instant::now() + RETRY_DELAY < deadline => {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                other => return other,
            }
        }
    }

    async fn handshake(path: &Path, transcript: Option<PathBuf>) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let transcript = transcript.and_then(Transcript::open);
        if let Some(t) = &transcript {
            t.record("--", &format!("connected to {}", path.display()));
        }
        let (read_half, write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);

        let mut buf = Vec::new();
        let greeting: Value = loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|source| QmpError::Io { source })?;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            let line = trim_line(&buf);
            if line.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if let Some(t) = &transcript {
                t.record("<-", &text);
            }
            break serde_json::from_slice(line).map_err(|_| {
                QmpError::Protocol(format!("unparsable greeting: {}", snippet(&text)))
            })?;
        };
        let Some(qmp_info) = greeting.get("QMP").filter(|v| v.is_object()) else {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting: {}",
                snippet(&greeting.to_string())
            )));
        };
        let version = match qmp_info
            .get("version")
            .map(qapi::qmp::VersionInfo::deserialize)
        {
            Some(Ok(v)) => Some(v),
            _ => {
                tracing::warn!(path = %path.display(), "QMP greeting without a usable version");
                None
            }
        };

        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            pending: Mutex::new(Pending::default()),
            events: Mutex::new(Some(events)),
            closed: watch::Sender::new(false),
            transcript,
        });
        let reader = tokio::spawn(read_loop(reader, Arc::clone(&shared)));
        let qmp = Qmp {
            inner: Arc::new(Inner {
                shared,
                writer: Arc::new(tokio::sync::Mutex::new(write_half)),
                next_id: AtomicU64::new(0),
                reader,
                greeting,
                version,
            }),
        };
        qmp.execute_raw("qmp_capabilities", None, timeout_for("qmp_capabilities"))
            .await?;
        Ok(qmp)
    }

    /// Execute a typed command with the timeout from [`timeout_for`].
    pub async fn execute<C: qapi::Command>(&self, cmd: C) -> Result<C::Ok, QmpError> {
        self.execute_timeout(cmd, timeout_for(C::NAME)).await
    }

    /// Execute a typed command with an explicit timeout.
    pub async fn execute_timeout<C: qapi::Command>(
        &self,
        cmd: C,
        timeout: Duration,
    ) -> Result<C::Ok, QmpError> {
        let args = serde_json::to_value(&cmd).map_err(|source| QmpError::Encode {
            command: C::NAME.to_owned(),
            source,
        })?;
        drop(cmd);
        let args = match args {
            Value::Null => None,
            Value::Object(map) if map.is_empty() => None,
            other => Some(other),
        };
        let ret = self.execute_raw(C::NAME, args, timeout).await?;
        serde_json::from_value(ret).map_err(|source| QmpError::Decode {
            command: C::NAME.to_owned(),
            source,
        })
    }

    /// Untyped escape hatch: execute `name` with JSON `args` (normally an
    /// object), returning the raw `"return"` value.
    pub async fn execute_raw(
        &self,
        name: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let line = serde_json::to_string(&Request {
            execute: name,
            arguments: args.as_ref(),
            id,
        })
        .map_err(|source| QmpError::Encode {
            command: name.to_owned(),
            source,
        })?;

        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&shared.pending);
            if pending.closed {
                return Err(QmpError::Closed);
            }
            pending.waiters.insert(id, tx);
        }
        // Removes the pending entry on timeout, error or cancellation.
        let _guard = PendingGuard { shared, id };

        let exchange = async move {
            self.send_line(line).await?;
            match rx.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(QmpError::Command {
                    command: name.to_owned(),
                    class: e.class,
                    desc: e.desc,
                }),
                // Sender dropped: the reader saw EOF and failed everything.
                Err(_) => Err(QmpError::Closed),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    path = %shared.path.display(), command = name, id, ?timeout,
                    "QMP command timed out"
                );
                Err(QmpError::Timeout {
                    command: name.to_owned(),
                    after: timeout,
                })
            }
        }
    }

    /// Write one line. The write runs in its own task under the writer lock,
    /// so it always completes (or fails) as a whole even if the caller gives up.
    async fn send_line(&self, line: String) -> Result<(), QmpError> {
        let writer = Arc::clone(&self.inner.writer);
        let shared = Arc::clone(&self.inner.shared);
        let task = tokio::spawn(async move {
            let mut writer = writer.lock().await;
            if let Some(t) = &shared.transcript {
                t.record("->", &line);
            }
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            writer.write_all(&bytes).await?;
            writer.flush().await
        });
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if is_disconnect(&e) => Err(QmpError::Closed),
            Ok(Err(source)) => Err(QmpError::Io { source }),
            Err(join) => Err(QmpError::Io {
                source: io::Error::other(join.to_string()),
            }),
        }
    }

    /// Subscribe to events. Only events arriving after this call are seen.
    /// After the connection closes, receivers get `RecvError::Closed`. A
    /// receiver more than 1024 events behind gets `RecvError::Lagged`.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        match lock(&self.inner.shared.events).as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                // Already closed: hand out a receiver that reports Closed.
                let (_tx, rx) = broadcast::channel(1);
                rx
            }
        }
    }

    /// Resolves when the connection is closed (EOF or read error), e.g.
    /// because QEMU exited. Treat it as a shutdown signal.
    pub async fn closed(&self) {
        let mut rx = self.inner.shared.closed.subscribe();
        // Err only if the sender is dropped, which cannot happen while `self` lives.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// The socket path this handle is connected to.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// The raw greeting (`{"QMP": {...}}`) QEMU sent on connect.
    pub fn greeting(&self) -> &Value {
        &self.inner.greeting
    }

    /// QEMU version from the greeting, if it could be decoded.
    pub fn version(&self) -> Option<&qapi::qmp::VersionInfo> {
        self.inner.version.as_ref()
    }

    #[cfg(test)]
    fn pending_len(&self) -> usize {
        lock(&self.inner.shared.pending).waiters.len()
    }
}

impl fmt::Debug for Qmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qmp")
            .field("path", &self.inner.shared.path)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).waiters.remove(&self.id);
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

async fn read_loop(mut reader: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(4096);
    let reason = loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break "EOF".to_owned(),
            Ok(_) => shared.handle_line(&buf),
            Err(e) => break format!("read error: {e}"),
        }
    };
    shared.close(&reason);
}

impl Shared {
    fn handle_line(&self, raw: &[u8]) {
        let line = trim_line(raw);
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(line);
        if let Some(t) = &self.transcript {
            t.record("<-", &text);
        }
        let mut obj = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), line = snippet(&text), "skipping non-object QMP line");
                return;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, line = snippet(&text), "skipping unparsable QMP line");
                return;
            }
        };

        if let Some(name) = obj.get("event").and_then(Value::as_str) {
            let name = name.to_owned();
            let timestamp = obj.get("timestamp").and_then(|t| {
                Some((
                    t.get("seconds")?.as_i64()?,
                    t.get("microseconds")?.as_i64()?,
                ))
            });
            let data = obj
                .remove("data")
                .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
            tracing::debug!(path = %self.path.display(), event = %name, "QMP event");
            if let Some(tx) = lock(&self.events).as_ref() {
                // Err only means nobody is subscribed right now.
                let _ = tx.send(QmpEvent {
                    name,
                    data,
                    timestamp,
                });
            }
            return;
        }

        let reply = if let Some(ret) = obj.remove("return") {
            Ok(ret)
        } else if let Some(err) = obj.remove("error") {
            let field = |k: &str| {
                err.get(k)
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_owned)
            };
            Err(ErrorReply {
                class: field("class"),
                desc: field("desc"),
            })
        } else {
            tracing::warn!(path = %self.path.display(), line = snippet(&text), "skipping unexpected QMP message");
            return;
        };
        let Some(id) = obj.get("id").and_then(Value::as_u64) else {
            tracing::warn!(path = %self.path.display(), line = snippet(&text), "skipping QMP reply without our id");
            return;
        };
        let waiter = lock(&self.pending).waiters.remove(&id);
        match waiter {
            // A send error means the caller went away in the meantime.
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => {
                tracing::debug!(path = %self.path.display(), id, "ignoring late QMP reply");
            }
        }
    }

    fn close(&self, reason: &str) {
        tracing::debug!(path = %self.path.display(), reason, "QMP connection closed");
        let waiters = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        // Dropping the senders fails every waiting command with `Closed`.
        drop(waiters);
        lock(&self.events).take();
        if let Some(t) = &self.transcript {
            t.record("--", &format!("connection closed ({reason})"));
        }
        self.closed.send_replace(true);
    }
}

fn trim_line(raw: &[u8]) -> &[u8] {
    raw.trim_ascii()
}

fn snippet(text: &str) -> &str {
    match text.char_indices().nth(LOG_SNIPPET) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Append-only, timestamped log of the QMP conversation (best effort).
struct Transcript {
    path: PathBuf,
    file: Mutex<File>,
    warned: AtomicBool,
}

impl Transcript {
    fn open(path: PathBuf) -> Option<Transcript> {
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => Some(Transcript {
                path,
                file: Mutex::new(file),
                warned: AtomicBool::new(false),
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open QMP transcript");
                None
            }
        }
    }

    /// `prefix` is `->` (sent), `<-` (received) or `--` (note).
    /// These are small appends to a local file, so blocking here is fine.
    fn record(&self, prefix: &str, line: &str) {
        let entry = format!("{} {prefix} {line}\n", format_timestamp(SystemTime::now()));
        let result = lock(&self.file).write_all(entry.as_bytes());
        if let Err(e) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write QMP transcript");
            }
        }
    }
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2024-01-01T00:00:00.000000Z`.
fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u6"}, "capabilities": ["oob"]}}"#;
    const WAIT: Duration = Duration::from_secs(5);

    /// Server side of a fake QMP connection.
    struct FakeConn {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl FakeConn {
        /// Accept one client and do the server side of the handshake.
        async fn accept(listener: &UnixListener) -> FakeConn {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, w) = stream.into_split();
            let mut conn = FakeConn {
                reader: BufReader::new(r),
                writer: w,
            };
            conn.send_raw(GREETING).await;
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "qmp_capabilities");
            assert!(cmd.get("arguments").is_none(), "{cmd}");
            conn.reply(&cmd, json!({})).await;
            conn
        }

        /// Next command sent by the client.
        async fn recv(&mut self) -> Value {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).await.unwrap();
            assert!(n > 0, "client closed the connection");
            assert!(line.ends_with('\n'));
            serde_json::from_str(&line).unwrap()
        }

        async fn send_raw(&mut self, line: &str) {
            // QEMU terminates lines with CRLF.
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }

        async fn send(&mut self, v: Value) {
            self.send_raw(&v.to_string()).await;
        }

        async fn reply(&mut self, cmd: &Value, ret: Value) {
            self.send(json!({"return": ret, "id": cmd["id"]})).await;
        }
    }

    fn fake_listener() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[tokio::test]
    async fn query_status_typed_round_trip() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "query-status");
            assert!(cmd.get("arguments").is_none(), "{cmd}");
            assert!(cmd["id"].is_u64());
            // QEMU 7.2 shape (with `singlestep`) plus a field nobody knows.
            let ret = json!({"running": false, "singlestep": false, "status": "prelaunch", "future": [1]});
            conn.reply(&cmd, ret).await;
            conn
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let v = qmp.version().unwrap();
        assert_eq!((v.qemu.major, v.qemu.minor, v.qemu.micro), (7, 2, 0));
        assert!(qmp.greeting()["QMP"].is_object());
        let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
        assert!(!status.running);
        assert!(matches!(status.status, qapi::qmp::RunState::prelaunch));
        assert_eq!(qmp.pending_len(), 0);
        assert!(!qmp.is_closed());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn out_of_order_replies_matched_by_id() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let a = conn.recv().await;
            let b = conn.recv().await;
            assert_ne!(a["id"], b["id"]);
            // Answer the second one first.
            for cmd in [&b, &a] {
                let ret = match cmd["execute"].as_str().unwrap() {
                    "query-status" => {
                        json!({"running": true, "singlestep": false, "status": "running"})
                    }
                    "query-version" => {
                        json!({"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "pkg"})
                    }
                    other => panic!("unexpected command {other}"),
                };
                conn.reply(cmd, ret).await;
            }
            conn
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        // Run one of them on another task: handles and futures are Send.
        let handle = qmp.clone();
        let status = tokio::spawn(async move { handle.execute(qapi::qmp::query_status {}).await });
        let version = qmp.execute(qapi::qmp::query_version {}).await;
        let status = status.await.unwrap();
        let status = status.unwrap();
        assert!(status.running);
        assert!(matches!(status.status, qapi::qmp::RunState::running));
        assert_eq!(version.unwrap().qemu.minor, 2);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unknown_events_and_garbage_are_skipped() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let cmd = conn.recv().await;
            conn.send(json!({"event": "SOME_FUTURE_EVENT", "data": {"x": 1},
                "timestamp": {"seconds": 1700000000, "microseconds": 42}}))
                .await;
            conn.send_raw("this is not json {").await;
            conn.send_raw("[1, 2, 3]").await;
            conn.send_raw(r#"{"unexpected": true}"#).await;
            conn.send_raw(r#"{"return": {}, "id": "not-ours"}"#).await;
            conn.send_raw("").await;
            conn.send(json!({"event": "SHUTDOWN",
                "data": {"guest": true, "reason": "guest-shutdown", "added-in-qemu-99": 1},
                "timestamp": {"seconds": 1700000001, "microseconds": 7}}))
                .await;
            conn.send(json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}))
                .await;
            conn.reply(
                &cmd,
                json!({"running": false, "singlestep": false, "status": "shutdown"}),
            )
            .await;
            // The connection still works afterwards.
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "query-name");
            conn.reply(&cmd, json!({"name": "vm1"})).await;
            conn
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let mut events = qmp.events();
        let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
        assert!(matches!(status.status, qapi::qmp::RunState::shutdown));

        let ev = events.recv().await.unwrap();
        assert_eq!(ev.name, "SOME_FUTURE_EVENT");
        assert_eq!(ev.data, json!({"x": 1}));
        assert_eq!(ev.timestamp, Some((1_700_000_000, 42)));
        assert!(ev.parse::<qapi::qmp::SHUTDOWN>().is_none());

        let ev = events.recv().await.unwrap();
        assert_eq!(ev.name, "SHUTDOWN");
        assert_eq!(ev.timestamp, Some((1_700_000_001, 7)));
        let shutdown = ev.parse::<qapi::qmp::SHUTDOWN>().unwrap().unwrap();
        assert!(shutdown.guest);
        assert!(matches!(
            shutdown.reason,
            qapi::qmp::ShutdownCause::guest_shutdown
        ));

        let ev = events.recv().await.unwrap();
        assert_eq!(ev.name, "STOP");
        assert_eq!(ev.data, json!({}));
        ev.parse::<qapi::qmp::STOP>().unwrap().unwrap();

        let name = qmp.execute(qapi::qmp::query_name {}).await.unwrap();
        assert_eq!(name.name.as_deref(), Some("vm1"));
        assert!(!qmp.is_closed());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn timeout_then_connection_still_works() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let slow = conn.recv().await;
            // No reply until the next command shows up; then reply late.
            let next = conn.recv().await;
            conn.reply(
                &slow,
                json!({"running": true, "singlestep": false, "status": "running"}),
            )
            .await;
            conn.reply(
                &next,
                json!({"running": false, "singlestep": false, "status": "paused"}),
            )
            .await;
            conn
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let err = qmp
            .execute_timeout(qapi::qmp::query_status {}, Duration::from_millis(200))
            .await
            .unwrap_err();
        match &err {
            QmpError::Timeout { command, after } => {
                assert_eq!(command, "query-status");
                assert_eq!(*after, Duration::from_millis(200));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(!err.is_closed());
        assert_eq!(qmp.pending_len(), 0);
        // The late reply to the first command must not be taken for this one.
        let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
        assert!(matches!(status.status, qapi::qmp::RunState::paused));
        assert!(!qmp.is_closed());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn server_close_fails_pending_and_resolves_closed() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "system_powerdown");
            drop(conn);
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let mut events = qmp.events();
        let started = Instant::now();
        let err = qmp
            .execute_timeout(qapi::qmp::system_powerdown {}, WAIT)
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Closed), "{err:?}");
        assert!(started.elapsed() < WAIT);
        tokio::time::timeout(WAIT, qmp.closed()).await.unwrap();
        assert!(qmp.is_closed());
        assert_eq!(qmp.pending_len(), 0);
        // Everything afterwards fails fast with Closed.
        let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
        assert!(err.is_closed(), "{err:?}");
        assert!(matches!(
            events.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        assert!(matches!(
            qmp.events().recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        // A clone sees the same state.
        tokio::time::timeout(WAIT, qmp.clone().closed())
            .await
            .unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn error_reply_and_decode_error() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "device_del");
            assert_eq!(cmd["arguments"], json!({"id": "nope"}));
            conn.send(json!({"error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}, "id": cmd["id"]}))
                .await;
            let cmd = conn.recv().await;
            assert_eq!(cmd["execute"], "x-new-thing");
            assert_eq!(cmd["arguments"], json!({"a": 1}));
            // An error class the qapi crate does not know.
            conn.send(json!({"error": {"class": "SomeNewClass", "desc": "nah"}, "id": cmd["id"]}))
                .await;
            let cmd = conn.recv().await;
            conn.reply(&cmd, json!({"status": 42})).await;
            conn
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let err = qmp
            .execute(qapi::qmp::device_del {
                id: "nope".to_owned(),
            })
            .await
            .unwrap_err();
        match err {
            QmpError::Command {
                command,
                class,
                desc,
            } => {
                assert_eq!(command, "device_del");
                assert_eq!(class, "DeviceNotFound");
                assert_eq!(desc, "Device 'nope' not found");
            }
            other => panic!("expected Command, got {other:?}"),
        }
        let err = qmp
            .execute_raw("x-new-thing", Some(json!({"a": 1})), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QmpError::Command { class, desc, .. } if class == "SomeNewClass" && desc == "nah"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "QMP x-new-thing failed: SomeNewClass: nah");
        let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
        assert!(matches!(err, QmpError::Decode { .. }), "{err:?}");
        assert!(!qmp.is_closed());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn transcript_records_both_directions() {
        let (dir, path, listener) = fake_listener();
        let transcript = dir.path().join("qmp.log");
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let cmd = conn.recv().await;
            conn.send(json!({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}))
                .await;
            conn.reply(&cmd, json!({})).await;
            conn
        });
        let qmp = Qmp::connect(&path, Some(transcript.clone())).await.unwrap();
        qmp.execute(qapi::qmp::cont {}).await.unwrap();
        let conn = server.await.unwrap();
        drop(conn);
        tokio::time::timeout(WAIT, qmp.closed()).await.unwrap();

        let text = std::fs::read_to_string(&transcript).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        assert!(has(r#"<- {"QMP""#), "{text}");
        assert!(has(r#"-> {"execute":"qmp_capabilities","id":0}"#), "{text}");
        assert!(has(r#"-> {"execute":"cont","id":1}"#), "{text}");
        assert!(has(r#"<- {"event":"RESUME""#), "{text}");
        assert!(has(r#"<- {"id":1,"return":{}}"#), "{text}");
        assert!(has("-- connection closed"), "{text}");
        for line in &lines {
            // "YYYY-MM-DDTHH:MM:SS.uuuuuuZ <dir> ..."
            let (ts, rest) = line.split_once(' ').unwrap();
            assert_eq!(ts.len(), 27, "{line}");
            assert!(ts.ends_with('Z'), "{line}");
            assert!(
                ["-> ", "<- ", "-- "].iter().any(|p| rest.starts_with(p)),
                "{line}"
            );
        }
    }

    #[tokio::test]
    async fn connect_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sock");
        let err = Qmp::connect(&missing, None).await.unwrap_err();
        assert!(
            matches!(&err, QmpError::Connect { path, .. } if *path == missing),
            "{err:?}"
        );
        let err = Qmp::connect_with_retry(&missing, None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Connect { .. }), "{err:?}");

        // A peer that accepts but never greets: the handshake times out.
        let (_dir, path, listener) = fake_listener();
        let silent = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(WAIT).await;
            drop(stream);
        });
        let err = Qmp::connect_timeout(&path, None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
        silent.abort();

        // A peer that is not QMP.
        let (_dir, path, listener) = fake_listener();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"hello\": 1}\r\n").await.unwrap();
            tokio::time::sleep(WAIT).await;
        });
        let err = Qmp::connect(&path, None).await.unwrap_err();
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn dropping_last_handle_closes_socket() {
        let (_dir, path, listener) = fake_listener();
        let server = tokio::spawn(async move {
            let mut conn = FakeConn::accept(&listener).await;
            let mut line = String::new();
            let n = conn.reader.read_line(&mut line).await.unwrap();
            assert_eq!(n, 0, "expected EOF, got {line:?}");
        });
        let qmp = Qmp::connect(&path, None).await.unwrap();
        let clone = qmp.clone();
        let _events = qmp.events();
        drop(qmp);
        assert!(!clone.is_closed());
        drop(clone);
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Qmp>();
        send_sync::<QmpError>();
        send_sync::<QmpEvent>();
    }

    #[test]
    fn timeout_table() {
        assert_eq!(timeout_for("query-status"), QUERY_TIMEOUT);
        assert_eq!(timeout_for("query-version"), QUERY_TIMEOUT);
        assert_eq!(timeout_for("device_add"), SLOW_TIMEOUT);
        assert_eq!(timeout_for("blockdev-add"), SLOW_TIMEOUT);
        assert_eq!(timeout_for("screendump"), SLOW_TIMEOUT);
        assert_eq!(timeout_for("quit"), DEFAULT_TIMEOUT);
        assert_eq!(timeout_for("system_powerdown"), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout_for(<qapi::qmp::screendump as qapi::Command>::NAME),
            SLOW_TIMEOUT
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_micros(1_704_067_199_123_456);
        assert_eq!(format_timestamp(t), "2023-12-31T23:59:59.123456Z");
    }

    /// Against the real QEMU binary; skipped if it is not installed.
    #[tokio::test]
    async fn real_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let transcript = dir.path().join("qmp.log");
        let spawned = tokio::process::Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: qemu-system-x86_64 not installed");
                return;
            }
            Err(e) => panic!("cannot spawn qemu: {e}"),
        };

        let qmp = Qmp::connect_with_retry(&sock, Some(transcript.clone()), Duration::from_secs(20))
            .await
            .unwrap();
        let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
        assert!(!status.running);
        assert!(
            matches!(
                status.status,
                qapi::qmp::RunState::prelaunch | qapi::qmp::RunState::paused
            ),
            "{:?}",
            status.status
        );
        let version = qmp.execute(qapi::qmp::query_version {}).await.unwrap();
        assert!(version.qemu.major >= 2, "{version:?}");
        let greeting = qmp.version().unwrap();
        assert_eq!(greeting.qemu.major, version.qemu.major);

        let err = qmp
            .execute_raw("no-such-command", None, WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QmpError::Command { class, .. } if class == "CommandNotFound"),
            "{err:?}"
        );

        let mut events = qmp.events();
        match qmp.execute(qapi::qmp::quit {}).await {
            // QEMU may close the socket before its reply gets through.
            Ok(qapi::Empty {}) | Err(QmpError::Closed) => {}
            Err(e) => panic!("quit failed: {e:?}"),
        }
        tokio::time::timeout(Duration::from_secs(10), qmp.closed())
            .await
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{exit:?}");

        // QEMU emits SHUTDOWN before it closes the monitor.
        let mut shutdown = None;
        while let Ok(ev) = events.recv().await {
            if let Some(parsed) = ev.parse::<qapi::qmp::SHUTDOWN>() {
                shutdown = Some(parsed.unwrap());
            }
        }
        let shutdown = shutdown.expect("no SHUTDOWN event after quit");
        assert!(!shutdown.guest);
        assert!(matches!(
            shutdown.reason,
            qapi::qmp::ShutdownCause::host_qmp_quit
        ));
        let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
        assert!(err.is_closed(), "{err:?}");
        let text = std::fs::read_to_string(&transcript).unwrap();
        assert!(text.contains(r#"-> {"execute":"quit""#), "{text}");
    }
}
