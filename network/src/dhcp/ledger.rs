//! The DHCP ledger: what the responder saw and did for each NIC.
//!
//! [`super::handle`] gives the lease book one [`LedgerEntry`] for every packet
//! it reads (a DISCOVER, a REQUEST, ...) and one for every outcome (the OFFER,
//! ACK or NAK it sends, a failed commit, a packet it ignored), through
//! [`super::LeaseBook::record`]. Keeping them (bounded, per NIC) is the
//! daemon's business; so is showing them in the instance view.
//!
//! [`diagnose`] turns a NIC's entries into the typed failure the user sees
//! ("no DISCOVER within 60 s of link-up", "declined", ...), or `None` when
//! nothing is wrong (yet).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How long after link-up a guest may stay silent before that is a failure.
pub const DISCOVER_DEADLINE: Duration = Duration::from_secs(60);
/// How long after an OFFER a guest may take to REQUEST before that is a failure.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One line of a NIC's DHCP ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// When the responder saw the packet or made the reply.
    pub at: SystemTime,
    /// What happened.
    pub kind: LedgerKind,
    /// The transaction id of the exchange.
    pub xid: u32,
    /// The address concerned: offered, acknowledged, requested, declined or released.
    pub ip: Option<Ipv4Addr>,
    /// Free text for people (e.g. "renewing", "broadcast", "via relay 10.1.0.250").
    pub detail: String,
}

/// What a [`LedgerEntry`] records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LedgerKind {
    /// A DHCPDISCOVER arrived.
    Discover,
    /// A DHCPOFFER was sent.
    Offer,
    /// A DHCPREQUEST arrived (selecting, init-reboot, renewing or rebinding).
    Request,
    /// A DHCPACK was sent (after the lease was committed; also for INFORM).
    Ack,
    /// A DHCPNAK was sent.
    Nak {
        /// Why.
        reason: String,
    },
    /// The guest declined its address (it found it in use).
    Decline,
    /// The guest released its address.
    Release,
    /// A DHCPINFORM arrived.
    Inform,
    /// A packet from a MAC that is not a NIC of this network; nothing was sent.
    UnknownMac,
    /// The lease book could not store the lease, so no ACK was sent.
    CommitFailed {
        /// The book's error.
        reason: String,
    },
    /// A packet that got no reply for another reason.
    Ignored {
        /// Why.
        reason: String,
    },
}

impl LedgerKind {
    /// Upper-case name, as in a packet trace: `DISCOVER`, `NAK`, `COMMIT-FAILED`, ...
    pub fn name(&self) -> &'static str {
        match self {
            LedgerKind::Discover => "DISCOVER",
            LedgerKind::Offer => "OFFER",
            LedgerKind::Request => "REQUEST",
            LedgerKind::Ack => "ACK",
            LedgerKind::Nak { .. } => "NAK",
            LedgerKind::Decline => "DECLINE",
            LedgerKind::Release => "RELEASE",
            LedgerKind::Inform => "INFORM",
            LedgerKind::UnknownMac => "UNKNOWN-MAC",
            LedgerKind::CommitFailed { .. } => "COMMIT-FAILED",
            LedgerKind::Ignored { .. } => "IGNORED",
        }
    }

    /// Whether the guest sent this (as opposed to the responder's outcome).
    pub fn is_from_client(&self) -> bool {
        matches!(
            self,
            LedgerKind::Discover
                | LedgerKind::Request
                | LedgerKind::Decline
                | LedgerKind::Release
                | LedgerKind::Inform
                | LedgerKind::UnknownMac
        )
    }
}

impl fmt::Display for LedgerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerKind::Nak { reason }
            | LedgerKind::CommitFailed { reason }
            | LedgerKind::Ignored { reason } => write!(f, "{} ({reason})", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

impl LedgerEntry {
    /// An entry stamped now.
    pub fn now(
        kind: LedgerKind,
        xid: u32,
        ip: Option<Ipv4Addr>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            at: SystemTime::now(),
            kind,
            xid,
            ip,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for LedgerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} xid={:#010x}", self.kind, self.xid)?;
        if let Some(ip) = self.ip {
            write!(f, " {ip}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

/// The typed failure of a NIC's DHCP, from its ledger, or `None` if there is none (yet).
///
/// `entries` are the NIC's ledger in time order; `link_up` is when its link
/// came up (the tap attached); `now` is the time of the question. Only entries
/// since `link_up` count. In order of precedence:
/// * the last outcome was an ACK: `None` (all is well);
/// * nothing from the guest for [`DISCOVER_DEADLINE`] after link-up:
///   "no DISCOVER within 60 s of link-up";
/// * the guest's last word was a DECLINE, or the last outcome a failed commit,
///   a NAK, or an ignored packet: that, with its reason;
/// * an OFFER the guest has not followed with a REQUEST for [`REQUEST_DEADLINE`].
pub fn diagnose(entries: &[LedgerEntry], link_up: SystemTime, now: SystemTime) -> Option<String> {
    let since: Vec<&LedgerEntry> = entries.iter().filter(|e| e.at >= link_up).collect();
    let waited = now.duration_since(link_up).unwrap_or(Duration::ZERO);
    let heard = since.iter().any(|e| e.kind.is_from_client());
    if !heard {
        return (waited >= DISCOVER_DEADLINE).then(|| {
            format!(
                "no DISCOVER within {} s of link-up (is the guest's DHCP client running on this NIC?)",
                DISCOVER_DEADLINE.as_secs()
            )
        });
    }
    let last = since.last()?;
    let ip = |e: &LedgerEntry| e.ip.map(|ip| format!(" {ip}")).unwrap_or_default();
    match &last.kind {
        LedgerKind::Ack => None,
        LedgerKind::Decline => Some(format!(
            "declined{}: the guest found the address in use on the link",
            ip(last)
        )),
        LedgerKind::CommitFailed { reason } => Some(format!(
            "the lease{} could not be stored, so no ACK was sent: {reason}",
            ip(last)
        )),
        LedgerKind::Nak { reason } => Some(format!("NAK: {reason}")),
        LedgerKind::Ignored { reason } => Some(format!("ignored: {reason}")),
        LedgerKind::UnknownMac => Some("unknown MAC: not a NIC of this network".into()),
        LedgerKind::Offer => {
            let waited = now.duration_since(last.at).unwrap_or(Duration::ZERO);
            (waited >= REQUEST_DEADLINE).then(|| {
                format!(
                    "offered{} but no REQUEST followed within {} s (does the guest receive the OFFER?)",
                    ip(last),
                    REQUEST_DEADLINE.as_secs()
                )
            })
        }
        LedgerKind::Discover | LedgerKind::Request | LedgerKind::Release | LedgerKind::Inform => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: SystemTime, secs: u64) -> SystemTime {
        t0 + Duration::from_secs(secs)
    }

    fn e(t0: SystemTime, secs: u64, kind: LedgerKind) -> LedgerEntry {
        LedgerEntry {
            at: at(t0, secs),
            kind,
            xid: 7,
            ip: Some(Ipv4Addr::new(10, 1, 0, 4)),
            detail: String::new(),
        }
    }

    #[test]
    fn silence_is_a_failure_only_after_the_deadline() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(diagnose(&[], t0, at(t0, 59)), None);
        let d = diagnose(&[], t0, at(t0, 60)).unwrap();
        assert!(d.starts_with("no DISCOVER within 60 s of link-up"), "{d}");
        // Entries from before link-up (an earlier boot) do not count.
        let old = [e(t0, 0, LedgerKind::Discover)];
        assert!(diagnose(&old, at(t0, 1), at(t0, 100)).is_some());
        // A clock that went backwards is "no time waited".
        assert_eq!(diagnose(&[], at(t0, 10), t0), None);
    }

    #[test]
    fn the_four_way_exchange_is_healthy() {
        let t0 = SystemTime::UNIX_EPOCH;
        let ok = [
            e(t0, 1, LedgerKind::Discover),
            e(t0, 1, LedgerKind::Offer),
            e(t0, 2, LedgerKind::Request),
            e(t0, 2, LedgerKind::Ack),
        ];
        assert_eq!(diagnose(&ok, t0, at(t0, 1000)), None);
        // Waiting for the REQUEST: fine for a while, then a failure.
        assert_eq!(diagnose(&ok[..2], t0, at(t0, 5)), None);
        let d = diagnose(&ok[..2], t0, at(t0, 11)).unwrap();
        assert!(d.contains("offered 10.1.0.4 but no REQUEST"), "{d}");
        // In the middle of an exchange: nothing to say.
        assert_eq!(diagnose(&ok[..1], t0, at(t0, 1000)), None);
        assert_eq!(diagnose(&ok[..3], t0, at(t0, 1000)), None);
    }

    #[test]
    fn typed_failures() {
        let t0 = SystemTime::UNIX_EPOCH;
        let cases = [
            (LedgerKind::Decline, "declined 10.1.0.4"),
            (
                LedgerKind::CommitFailed {
                    reason: "disk full".into(),
                },
                "could not be stored, so no ACK was sent: disk full",
            ),
            (
                LedgerKind::Nak {
                    reason: "wrong address".into(),
                },
                "NAK: wrong address",
            ),
            (
                LedgerKind::Ignored {
                    reason: "selected another server".into(),
                },
                "ignored: selected another server",
            ),
            (LedgerKind::UnknownMac, "unknown MAC"),
        ];
        for (kind, want) in cases {
            let entries = [
                e(t0, 1, LedgerKind::Discover),
                e(t0, 1, LedgerKind::Offer),
                e(t0, 2, kind.clone()),
            ];
            let d = diagnose(&entries, t0, at(t0, 3)).unwrap_or_default();
            assert!(d.contains(want), "{kind:?}: {d}");
        }
        // A later ACK clears an earlier failure.
        let recovered = [
            e(t0, 1, LedgerKind::Decline),
            e(t0, 5, LedgerKind::Request),
            e(t0, 5, LedgerKind::Ack),
        ];
        assert_eq!(diagnose(&recovered, t0, at(t0, 100)), None);
    }

    #[test]
    fn display_and_serde() {
        let entry = LedgerEntry {
            at: SystemTime::UNIX_EPOCH,
            kind: LedgerKind::Nak {
                reason: "wrong address".into(),
            },
            xid: 0xdead_beef,
            ip: None,
            detail: "renewing".into(),
        };
        assert_eq!(
            entry.to_string(),
            "NAK (wrong address) xid=0xdeadbeef renewing"
        );
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["kind"]["type"], "nak");
        assert_eq!(json["kind"]["reason"], "wrong address");
        let back: LedgerEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
        assert!(LedgerKind::Discover.is_from_client());
        assert!(!LedgerKind::Offer.is_from_client());
    }
}
