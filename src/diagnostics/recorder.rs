//! The boot flight recorder of one VM: its boots, their bounded serial logs, screenshot series
//! and timelines. The VM's actor feeds it (boot boundaries, the serial spool, screenshots, QMP,
//! DHCP and agent events); the API reads it. Both go through a mutex held only for short, local
//! work, so a reader never waits on the actor's long operations (a graceful shutdown).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use vmnode_network::dhcp::{LedgerEntry, LedgerKind};

use super::boots::{Boot, Frame, LineSplitter, Mark, Record, Source, KEEP_BOOTS, MAX_FRAMES};
use super::serial::{BootLog, LogState, Spool};
use super::verdict::{self, Verdict};

/// A screen that has not changed for this long during a boot is flagged.
const FROZEN_MS: i64 = 15_000;
/// Lines of screen text kept with each frame.
const SCREEN_LINES: usize = 12;

/// The last `n` non-empty lines.
fn last_lines(text: &[String], n: usize) -> Vec<String> {
    let mut v: Vec<String> = text
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .cloned()
        .collect();
    v.reverse();
    v
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Inner>>);

struct Inner {
    dir: PathBuf,
    vm: String,
    vm_id: String,
    rec: Record,
    spool: Spool,
    log: Option<BootLog>,
    lines: LineSplitter,
    dirty: bool,
    /// A boot milestone came in on the serial console since the last screenshot.
    milestone: bool,
}

/// A piece of a boot's serial log, from a cursor.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tail {
    pub boot: u32,
    /// Pass it back to get what follows.
    pub cursor: u64,
    /// Bytes of output this boot has written so far, and how many of them were cut.
    pub written: u64,
    pub cut: u64,
    pub ended: bool,
    pub text: String,
}

/// A boot with its verdict, as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootView {
    #[serde(flatten)]
    pub boot: Boot,
    pub verdict: Verdict,
}

impl Recorder {
    /// The recorder of the VM whose diagnostics container is `dir`.
    pub fn open(dir: &Path, vm: &str, vm_id: &str) -> Recorder {
        let mut rec = Record::load(dir);
        // The log may hold bytes appended after the record was last saved (the daemon was
        // killed between the two): count them as read, so they are not copied twice.
        if let Some(b) = rec.boots.last_mut().filter(|b| b.ended_ms.is_none()) {
            let len = std::fs::metadata(dir.join(&b.log_blob))
                .map(|m| m.len())
                .unwrap_or(0);
            let extra = len.saturating_sub(b.log.file_len());
            b.log.written += extra;
            rec.spool_cursor += extra;
        }
        let spool = Spool {
            path: spool_path(dir),
            cursor: rec.spool_cursor,
        };
        let log = rec
            .current()
            .filter(|b| b.ended_ms.is_none())
            .map(|b| BootLog::open(dir.join(&b.log_blob), b.log));
        Recorder(Arc::new(Mutex::new(Inner {
            dir: dir.to_path_buf(),
            vm: vm.into(),
            vm_id: vm_id.into(),
            rec,
            spool,
            log,
            lines: LineSplitter::default(),
            dirty: false,
            milestone: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spool_path(&self) -> PathBuf {
        self.lock().spool.path.clone()
    }

    /// Starts boot N+1. `new_qemu`: a fresh QEMU will write a fresh spool (start, redeploy);
    /// otherwise the running QEMU reset (restart, guest reboot) and the spool goes on.
    pub fn begin_boot(&self, reason: &str, new_qemu: bool) {
        let mut g = self.lock();
        g.pump(None);
        if g.rec.current().is_some_and(|b| b.ended_ms.is_none()) {
            g.finish(if new_qemu { "QEMU stopped" } else { "reset" });
        }
        if new_qemu {
            let _ = std::fs::remove_file(&g.spool.path);
            g.spool.cursor = 0;
            if let Some(d) = g.spool.path.parent() {
                let _ = std::fs::create_dir_all(d);
            }
        }
        let n = g.rec.boots.last().map(|b| b.n + 1).unwrap_or(1);
        let log_blob = format!("{}.{}.boot{n}.serialconsole.log", g.vm, g.vm_id);
        let started = now_ms();
        let mut boot = Boot::new(n, reason, started, log_blob.clone());
        boot.push(
            started,
            Source::Vmnode,
            Mark::Firmware,
            if new_qemu {
                format!("{reason}: QEMU starting")
            } else {
                format!("{reason}: the guest was reset")
            },
        );
        g.rec.boots.push(boot);
        let path = g.dir.join(&log_blob);
        let _ = std::fs::create_dir_all(&g.dir);
        let _ = std::fs::File::create(&path);
        g.log = Some(BootLog::open(path, LogState::default()));
        g.link_current();
        g.lines = LineSplitter::default();
        g.prune();
        g.dirty = true;
        g.save();
    }

    /// The current boot ended (QEMU exited, the VM was stopped).
    pub fn end_boot(&self, reason: &str) {
        let mut g = self.lock();
        g.pump(None);
        if g.rec.current().is_some_and(|b| b.ended_ms.is_none()) {
            g.finish(reason);
            g.save();
        }
    }

    /// Moves new serial output into the current boot's log; returns the bytes moved.
    pub fn pump(&self) -> u64 {
        self.lock().pump(None)
    }

    pub fn event(&self, source: Source, mark: Mark, text: impl Into<String>) {
        let mut g = self.lock();
        if let Some(b) = g.rec.current_mut().filter(|b| b.ended_ms.is_none()) {
            b.push(now_ms(), source, mark, text);
            g.dirty = true;
        }
    }

    /// Whether the current boot already has an entry with this mark.
    pub fn has(&self, mark: Mark) -> bool {
        self.lock()
            .rec
            .current()
            .is_some_and(|b| b.events.iter().any(|e| e.mark == mark))
    }

    /// The current boot's number and how long ago it started (ms), if one is in progress.
    pub fn current(&self) -> Option<(u32, i64)> {
        self.lock()
            .rec
            .current()
            .filter(|b| b.ended_ms.is_none())
            .map(|b| (b.n, now_ms() - b.started_ms))
    }

    /// Adds the NIC's DHCP ledger entries the current boot has not seen yet.
    pub fn dhcp(&self, entries: &[LedgerEntry]) {
        let mut g = self.lock();
        let Some(b) = g.rec.current_mut().filter(|b| b.ended_ms.is_none()) else {
            return;
        };
        let mut newest = b.dhcp_seen_ms;
        let mut added = false;
        for e in entries {
            let at =
                e.at.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
            if at <= b.dhcp_seen_ms {
                continue;
            }
            newest = newest.max(at);
            let mark = if matches!(e.kind, LedgerKind::Ack) {
                Mark::Network
            } else {
                Mark::Info
            };
            let ip = e.ip.map(|i| format!(" {i}")).unwrap_or_default();
            let detail = if e.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.detail)
            };
            b.push(at, Source::Dhcp, mark, format!("{}{ip}{detail}", e.kind));
            added = true;
        }
        b.dhcp_seen_ms = newest;
        if added {
            b.events.sort_by_key(|e| e.at_ms);
            g.dirty = true;
        }
    }

    /// Records a screenshot of the current boot: a new frame, or one more capture of the last.
    /// `png` is the capture just written; it is hard-linked as the frame's blob when new.
    pub fn frame(&self, hash: u64, width: u32, height: u32, png: &Path, text: &[String]) {
        let mut g = self.lock();
        let (vm, vm_id, dir) = (g.vm.clone(), g.vm_id.clone(), g.dir.clone());
        let now = now_ms();
        let Some(b) = g.rec.current_mut().filter(|b| b.ended_ms.is_none()) else {
            return;
        };
        if let Some(last) = b.frames.last_mut().filter(|f| f.hash == hash) {
            last.last_ms = now;
            last.captures += 1;
            let still = last.last_ms - last.first_ms;
            let flagged = b.events.iter().any(|e| e.mark == Mark::Frozen);
            if still >= FROZEN_MS && !flagged {
                let seq = last.seq;
                b.push(
                    now,
                    Source::Screen,
                    Mark::Frozen,
                    format!(
                        "screen frozen for {} s (frame {seq} unchanged)",
                        still / 1000
                    ),
                );
            }
            g.dirty = true;
            return;
        }
        if b.frames.len() >= MAX_FRAMES {
            return;
        }
        let seq = b.frames.last().map(|f| f.seq + 1).unwrap_or(1);
        let blob = format!("{vm}.{vm_id}.boot{}.screen{seq:02}.png", b.n);
        let path = dir.join(&blob);
        let _ = std::fs::remove_file(&path);
        if std::fs::hard_link(png, &path).is_err() && std::fs::copy(png, &path).is_err() {
            return;
        }
        let seen = super::screen_text::recognise(text);
        if let Some((what, line)) = &seen {
            let mark = if *what == "panic" {
                Mark::Panic
            } else {
                Mark::Login
            };
            let label = if *what == "panic" {
                "a kernel panic"
            } else {
                "a login prompt"
            };
            b.push(
                now,
                Source::Screen,
                mark,
                format!("frame {seq} shows {label}: {line}"),
            );
        }
        b.frames.push(Frame {
            seq,
            blob,
            first_ms: now,
            last_ms: now,
            captures: 1,
            hash,
            width,
            height,
            shows: seen.as_ref().map(|(w, _)| w.to_string()),
            evidence: seen.map(|(_, l)| l),
            text: last_lines(text, SCREEN_LINES),
        });
        g.dirty = true;
    }

    /// Whether a milestone arrived since the last call (the actor then takes a screenshot).
    pub fn take_milestone(&self) -> bool {
        std::mem::take(&mut self.lock().milestone)
    }

    /// Writes the record if something changed since the last save.
    pub fn save_if_dirty(&self) {
        let mut g = self.lock();
        if g.dirty {
            g.save();
        }
    }

    /// The current boot's verdict now.
    pub fn verdict(&self) -> Option<(u32, Verdict)> {
        let g = self.lock();
        g.rec.current().map(|b| (b.n, verdict::judge(b, now_ms())))
    }

    /// Every kept boot with its verdict, oldest first.
    pub fn boots(&self) -> Vec<BootView> {
        let g = self.lock();
        let now = now_ms();
        g.rec
            .boots
            .iter()
            .map(|b| BootView {
                boot: b.clone(),
                verdict: verdict::judge(b, now),
            })
            .collect()
    }

    /// Up to `max` bytes of boot `boot`'s log (the current one if `None`) from `cursor`, or its
    /// last `max` bytes without one.
    pub fn tail(&self, boot: Option<u32>, cursor: Option<u64>, max: u64) -> Option<Tail> {
        let mut g = self.lock();
        g.pump(None);
        let b = match boot {
            Some(n) => g.rec.boot(n)?,
            None => g.rec.current()?,
        };
        let log = BootLog::open(g.dir.join(&b.log_blob), b.log);
        let (bytes, next) = match cursor {
            Some(c) => log.read_from(c, max),
            None => log.tail(max),
        }
        .ok()?;
        Some(Tail {
            boot: b.n,
            cursor: next,
            written: b.log.written,
            cut: b.log.cut,
            ended: b.ended_ms.is_some(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// The cloud-named blobs of the latest screenshot and serial log.
    pub fn blob_names(&self) -> (String, String) {
        let g = self.lock();
        (
            super::screenshot_name(&g.vm, &g.vm_id, "bmp"),
            super::serial_log_name(&g.vm, &g.vm_id),
        )
    }
}

pub fn spool_path(dir: &Path) -> PathBuf {
    dir.join(".vmnode").join("serial.spool")
}

impl Inner {
    fn pump(&mut self, upto: Option<u64>) -> u64 {
        let Inner {
            spool,
            log,
            lines,
            rec,
            milestone,
            ..
        } = self;
        let Some(log) = log.as_mut() else {
            return 0;
        };
        let Some(boot) = rec.boots.last_mut() else {
            return 0;
        };
        let before = log.state.cut;
        let moved = spool.pump(upto, |data| {
            let at = now_ms();
            lines.feed(data, |l| {
                if let Some((mark, text)) = super::boots::classify_line(l) {
                    *milestone |= !matches!(mark, Mark::Info);
                    boot.push(at, Source::Serial, mark, text);
                }
            });
            log.append(data)
        });
        let moved = match moved {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "serial capture");
                0
            }
        };
        if moved > 0 {
            boot.log = log.state;
            rec.spool_cursor = spool.cursor;
            self.dirty = true;
            if log.state.cut != before {
                self.link_current();
            }
        }
        moved
    }

    fn finish(&mut self, reason: &str) {
        let now = now_ms();
        if let Some(b) = self.rec.current_mut() {
            b.ended_ms = Some(now);
            b.end_reason = Some(reason.into());
            b.push(
                now,
                Source::Vmnode,
                Mark::Info,
                format!("boot ended: {reason}"),
            );
        }
        self.log = None;
        self.dirty = true;
    }

    /// `{vm}.{vmId}.serialconsole.log`, the cloud's name, is the current boot's log.
    fn link_current(&self) {
        let Some(b) = self.rec.current() else { return };
        let alias = super::serial_log_path(&self.dir, &self.vm, &self.vm_id);
        let _ = std::fs::remove_file(&alias);
        let _ = std::fs::hard_link(self.dir.join(&b.log_blob), &alias);
    }

    /// Drops the oldest boots beyond [`KEEP_BOOTS`] and their blobs.
    fn prune(&mut self) {
        while self.rec.boots.len() > KEEP_BOOTS {
            let old = self.rec.boots.remove(0);
            let _ = std::fs::remove_file(self.dir.join(&old.log_blob));
            for f in &old.frames {
                let _ = std::fs::remove_file(self.dir.join(&f.blob));
            }
        }
    }

    fn save(&mut self) {
        match self.rec.save(&self.dir) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(error = %e, "saving boot records"),
        }
    }
}
