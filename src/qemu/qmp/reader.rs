//! The background reader: one task owns the socket's read half, matches replies to waiting
//! commands by id, broadcasts events, and on EOF fails everything pending.

use super::*;

pub(super) async fn read_loop(mut reader: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
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

pub(super) fn trim_line(raw: &[u8]) -> &[u8] {
    raw.trim_ascii()
}

pub(super) fn snippet(text: &str) -> &str {
    match text.char_indices().nth(LOG_SNIPPET) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
