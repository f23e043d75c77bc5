//! The boot flight recorder's records: one [`Boot`] per boot of a VM (start, restart, redeploy,
//! guest reboot), each with its bounded serial log, its screenshot series and a timeline merged
//! from vmnode's own steps, QMP events, serial milestones, screenshots, the NIC's DHCP ledger and
//! the guest agent. Stored as `.vmnode/boots.json` in the VM's diagnostics container (a hidden
//! file: not a blob).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::serial::LogState;

/// Boots kept per VM (older ones and their blobs are removed).
pub const KEEP_BOOTS: usize = 16;
/// Timeline entries kept per boot; serial lines that match a milestone are the bulk.
pub const MAX_EVENTS: usize = 400;
/// Distinct screenshots kept per boot (identical frames are collapsed into one).
pub const MAX_FRAMES: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Vmnode,
    Qmp,
    Serial,
    Screen,
    Dhcp,
    Agent,
}

/// What a timeline entry is evidence of (if anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mark {
    Firmware,
    Bootloader,
    Kernel,
    Initrd,
    Userspace,
    Login,
    Network,
    Agent,
    Panic,
    NetworkDown,
    AgentMissing,
    Frozen,
    Info,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: i64,
    pub source: Source,
    pub mark: Mark,
    pub text: String,
}

/// One distinct picture of the screen and how long it stayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frame {
    pub seq: u32,
    /// Blob name of the PNG in the diagnostics container.
    pub blob: String,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Captures that showed exactly this picture.
    pub captures: u32,
    pub hash: u64,
    pub width: u32,
    pub height: u32,
    /// What the screen was recognised to show: `panic`, `login`, or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shows: Option<String>,
    /// The line of screen text that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The last lines of text on the screen (read with the guest's font), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Boot {
    pub n: u32,
    /// `create`, `start`, `restart`, `redeploy`, `guest reboot`, `re-adopted`.
    pub reason: String,
    pub started_ms: i64,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    /// Why it ended (`guest powered off`, `QEMU exited`, `reset`, ...).
    #[serde(default)]
    pub end_reason: Option<String>,
    pub log: LogState,
    /// Blob name of this boot's serial log.
    pub log_blob: String,
    #[serde(default)]
    pub frames: Vec<Frame>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Timeline entries dropped once [`MAX_EVENTS`] was reached.
    #[serde(default)]
    pub events_dropped: u64,
    /// DHCP ledger entries up to this time are already in `events`.
    #[serde(default)]
    pub dhcp_seen_ms: i64,
}

impl Boot {
    /// Boot `n`, begun at `started_ms` for `reason`, its log in blob `log_blob`.
    pub fn new(n: u32, reason: &str, started_ms: i64, log_blob: String) -> Boot {
        Boot {
            n,
            reason: reason.into(),
            started_ms,
            ended_ms: None,
            end_reason: None,
            log: LogState::default(),
            log_blob,
            frames: vec![],
            events: vec![],
            events_dropped: 0,
            dhcp_seen_ms: started_ms,
        }
    }

    pub fn push(&mut self, at_ms: i64, source: Source, mark: Mark, text: impl Into<String>) {
        let text = text.into();
        // A line repeated (a prompt redrawn, a message looping) is one entry.
        if let Some(last) = self.events.last() {
            if last.source == source && last.mark == mark && last.text == text {
                return;
            }
        }
        if self.events.len() >= MAX_EVENTS {
            self.events_dropped += 1;
            return;
        }
        self.events.push(Event {
            at_ms,
            source,
            mark,
            text,
        });
    }
}

/// Everything the recorder keeps for one VM.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// How far the serial spool has been read.
    pub spool_cursor: u64,
    pub boots: Vec<Boot>,
}

impl Record {
    pub fn path(container: &Path) -> PathBuf {
        container.join(".vmnode").join("boots.json")
    }

    pub fn load(container: &Path) -> Record {
        match std::fs::read(Self::path(container)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "boot records unreadable; starting afresh");
                Record::default()
            }),
            Err(_) => Record::default(),
        }
    }

    /// Written temp + rename (no fsync: diagnostics, not state; a crash loses the last tick).
    pub fn save(&self, container: &Path) -> std::io::Result<()> {
        let p = Self::path(container);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = p.with_extension("json.tmp");
        // A full disk fails the write: no temp file is left behind.
        let written = std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())
            .and_then(|_| std::fs::rename(&tmp, p));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn current(&self) -> Option<&Boot> {
        self.boots.last()
    }

    pub fn current_mut(&mut self) -> Option<&mut Boot> {
        self.boots.last_mut()
    }

    pub fn boot(&self, n: u32) -> Option<&Boot> {
        self.boots.iter().find(|b| b.n == n)
    }
}

/// Recognises the serial console lines that mark a step of a boot. `None` for ordinary lines.
pub fn classify_line(line: &str) -> Option<(Mark, String)> {
    let l = line.trim_end_matches(['\r', '\n']).trim();
    if l.is_empty() {
        return None;
    }
    let text = || clean(l);
    // The tiny image's own milestones.
    if let Some(m) = l.find("VMNODE-BOOT: ") {
        let what = &l[m + 13..];
        let mark = match what.split_whitespace().next().unwrap_or("") {
            "init" => Mark::Userspace,
            "network" => Mark::Network,
            "network-down" => Mark::NetworkDown,
            "agent-started" => Mark::Info,
            "agent-missing" | "agent-failed" => Mark::AgentMissing,
            _ => Mark::Info,
        };
        return Some((mark, clean(what)));
    }
    let found = |pat: &str| l.contains(pat);
    let mark = if found("Kernel panic - not syncing") || found("kernel BUG at") {
        Mark::Panic
    } else if found("SeaBIOS (version") || found("UEFI firmware") || found("BdsDxe:") {
        Mark::Firmware
    } else if found("Booting from ") || found("GRUB") || found("Loading Linux") {
        Mark::Bootloader
    } else if found("Linux version ") {
        Mark::Kernel
    } else if found("Unpacking initramfs") || found("Run /init as init process") {
        Mark::Initrd
    } else if found("Run /sbin/init")
        || found("Welcome to ")
        || found("systemd[1]: ")
        || found("Reached target")
    {
        Mark::Userspace
    } else if l.ends_with("login:") {
        Mark::Login
    } else if found("dhcp-bound") || found("DHCPACK") || found("bound to ") {
        Mark::Network
    } else if found("VFS: Unable to mount root")
        || found("No working init found")
        || found("not syncing")
    {
        Mark::Panic
    } else {
        return None;
    };
    Some((mark, text()))
}

/// Printable text of a console line, at most 200 characters: terminal escape sequences
/// (`ESC [ ... letter`, `ESC c`) and other control characters removed.
fn clean(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            // A two-character sequence (ESC c, ESC 7, ...) ends here; a CSI runs on through
            // parameters and intermediates to one final byte in @..~.
            if it.next() == Some('[') {
                for p in it.by_ref() {
                    if ('@'..='~').contains(&p) {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
        if out.chars().count() >= 200 {
            break;
        }
    }
    out
}

/// Splits pumped serial bytes into lines, keeping an unfinished line (bounded) for the next call.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn feed(&mut self, data: &[u8], mut line: impl FnMut(&str)) {
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            let done = chunk.ends_with(b"\n");
            if self.partial.len() < 1024 {
                let room = 1024 - self.partial.len();
                self.partial
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if done {
                line(&String::from_utf8_lossy(&self.partial));
                self.partial.clear();
            }
        }
        // A prompt has no newline: look at it as it stands.
        if self.partial.ends_with(b"login: ") || self.partial.ends_with(b"login:") {
            line(&String::from_utf8_lossy(&self.partial));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_recognised() {
        let c = |l: &str| classify_line(l).map(|(m, _)| m);
        assert_eq!(
            c("[    0.000000] Linux version 6.1.0-27-amd64 (debian-kernel@...)"),
            Some(Mark::Kernel)
        );
        assert_eq!(
            c("[    2.1] Kernel panic - not syncing: No working init found."),
            Some(Mark::Panic)
        );
        assert_eq!(c("VMNODE-BOOT: init kernel=6.1"), Some(Mark::Userspace));
        assert_eq!(
            c("VMNODE-BOOT: network-down no-lease"),
            Some(Mark::NetworkDown)
        );
        assert_eq!(c("VMNODE-BOOT: agent-missing"), Some(Mark::AgentMissing));
        assert_eq!(c("vm1 login:"), Some(Mark::Login));
        assert_eq!(c("[    1.2] Run /init as init process"), Some(Mark::Initrd));
        assert_eq!(c("just some output"), None);
        let (_, t) =
            classify_line("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)").unwrap();
        assert_eq!(t, "SeaBIOS (version 1.16)");
        assert_eq!(c(""), None);
    }

    #[test]
    fn lines_split_across_pumps_and_prompts_without_newline() {
        let mut s = LineSplitter::default();
        let mut got = vec![];
        s.feed(b"Linux ver", |l| got.push(l.to_string()));
        s.feed(b"sion 6\nvm1 login: ", |l| got.push(l.to_string()));
        assert_eq!(got, vec!["Linux version 6\n", "vm1 login: "]);
        // A runaway line is bounded.
        s.feed(&[b'x'; 100_000], |_| {});
        assert!(s.partial.len() <= 1024 + 16);
    }

    #[test]
    fn repeated_entries_collapse_and_the_timeline_is_bounded() {
        let mut b = Boot::new(1, "start", 0, "x".into());
        b.push(1, Source::Serial, Mark::Login, "vm login:");
        b.push(2, Source::Serial, Mark::Login, "vm login:");
        assert_eq!(b.events.len(), 1);
        for i in 0..1000 {
            b.push(i, Source::Serial, Mark::Info, format!("line {i}"));
        }
        assert_eq!(b.events.len(), MAX_EVENTS);
        assert_eq!(b.events_dropped, 1001 - MAX_EVENTS as u64);
    }
}
