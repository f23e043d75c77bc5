//! The flight recorder's verdict: from one boot's timeline, how far the boot got and, if it
//! stopped, where — firmware, bootloader, kernel, initrd, userspace, network (no DHCP) or the
//! agent — with the timeline lines that show it. Pure: the caller passes the time.

use serde::Serialize;

use super::boots::{Boot, Event, Mark, Source};

/// A guest that reached userspace but holds no DHCP lease this long after is "stopped in
/// network".
pub const NETWORK_DEADLINE_MS: i64 = 30_000;
/// A guest whose network is up but whose agent has not answered this long after is "stopped
/// in agent".
pub const AGENT_DEADLINE_MS: i64 = 30_000;
/// A boot that has not reached userspace this long after QEMU started is stuck where it is.
pub const USERSPACE_DEADLINE_MS: i64 = 120_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Firmware,
    Bootloader,
    Kernel,
    Initrd,
    Userspace,
    Network,
    Agent,
    Booted,
}

impl Stage {
    fn next(self) -> Stage {
        use Stage::*;
        match self {
            Firmware => Bootloader,
            Bootloader => Kernel,
            Kernel => Initrd,
            Initrd => Userspace,
            Userspace => Network,
            Network => Agent,
            Agent | Booted => Booted,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every stage reached, agent answering.
    Booted,
    /// Still within its deadlines.
    Booting,
    /// Stopped at `stage`.
    Failed,
    /// The boot ended (power off, reset, QEMU exit) before it completed.
    Ended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub outcome: Outcome,
    /// The stage the boot is in or stopped in (`booted` when it completed).
    pub stage: Stage,
    /// One sentence for people.
    pub summary: String,
    /// The timeline lines that show it, oldest first.
    pub evidence: Vec<String>,
}

fn line(b: &Boot, e: &Event) -> String {
    let src = match e.source {
        Source::Vmnode => "vmnode",
        Source::Qmp => "qmp",
        Source::Serial => "serial",
        Source::Screen => "screen",
        Source::Dhcp => "dhcp",
        Source::Agent => "agent",
    };
    format!(
        "+{:.1}s {src}: {}",
        (e.at_ms - b.started_ms) as f64 / 1000.0,
        e.text
    )
}

/// The stage a mark proves reached.
fn stage_of(m: Mark) -> Option<Stage> {
    Some(match m {
        Mark::Firmware => Stage::Firmware,
        Mark::Bootloader => Stage::Bootloader,
        Mark::Kernel => Stage::Kernel,
        Mark::Initrd => Stage::Initrd,
        Mark::Userspace | Mark::Login => Stage::Userspace,
        Mark::Network => Stage::Network,
        Mark::Agent => Stage::Agent,
        _ => return None,
    })
}

/// Judges boot `b` at time `now_ms` (for an ended boot, its end is used).
pub fn judge(b: &Boot, now_ms: i64) -> Verdict {
    let now = b.ended_ms.unwrap_or(now_ms);
    let mut reached = Stage::Firmware;
    let mut proof: Vec<&Event> = vec![];
    for e in &b.events {
        if let Some(s) = stage_of(e.mark) {
            if s > reached || proof.is_empty() {
                reached = reached.max(s);
                proof.push(e);
            }
        }
    }
    let at = |s: Stage| -> Option<i64> {
        b.events
            .iter()
            .filter(|e| stage_of(e.mark).is_some_and(|m| m >= s))
            .map(|e| e.at_ms)
            .min()
    };
    let ev = |es: &[&Event]| es.iter().map(|e| line(b, e)).collect::<Vec<_>>();
    let of = |m: Mark| b.events.iter().filter(move |e| e.mark == m);

    // A panic ends the boot wherever it happens.
    if let Some(p) = of(Mark::Panic).next() {
        let stage = if reached >= Stage::Userspace {
            reached
        } else {
            Stage::Kernel
        };
        let mut evidence = ev(&proof);
        evidence.push(line(b, p));
        evidence.extend(of(Mark::Panic).skip(1).take(3).map(|e| line(b, e)));
        evidence.extend(of(Mark::Frozen).take(1).map(|e| line(b, e)));
        return Verdict {
            outcome: Outcome::Failed,
            stage,
            summary: format!("kernel panic: {}", p.text),
            evidence,
        };
    }
    if reached == Stage::Agent {
        // Network and agent both count; a guest may answer its agent before DHCP completes.
        if of(Mark::Network).next().is_some() {
            return Verdict {
                outcome: Outcome::Booted,
                stage: Stage::Booted,
                summary: "booted: network up and the guest agent answering".into(),
                evidence: ev(&proof),
            };
        }
    }
    let elapsed = now - b.started_ms;
    let network_up = of(Mark::Network).next().is_some();
    let agent_up = of(Mark::Agent).next().is_some();
    let failed = |stage: Stage, summary: String, extra: Vec<&Event>| {
        let mut evidence = ev(&proof);
        evidence.extend(ev(&extra));
        Verdict {
            outcome: if b.ended_ms.is_some() {
                Outcome::Ended
            } else {
                Outcome::Failed
            },
            stage,
            summary,
            evidence,
        }
    };
    if reached < Stage::Userspace {
        let stuck = reached.next();
        if b.ended_ms.is_some() || elapsed >= USERSPACE_DEADLINE_MS {
            let why = match &b.end_reason {
                Some(r) if b.ended_ms.is_some() => format!("boot ended ({r}) in {stuck:?}"),
                _ => format!(
                    "no sign of {} {:.0} s after QEMU started",
                    match stuck {
                        Stage::Bootloader | Stage::Kernel => "the kernel",
                        Stage::Initrd => "the initrd",
                        _ => "userspace",
                    },
                    elapsed as f64 / 1000.0
                ),
            };
            let frozen: Vec<&Event> = of(Mark::Frozen).take(1).collect();
            return failed(stage_lower(stuck), why, frozen);
        }
        return booting(b, reached, ev(&proof));
    }
    let user_at = at(Stage::Userspace).unwrap_or(b.started_ms);
    if !network_up {
        let down: Vec<&Event> = of(Mark::NetworkDown)
            .chain(b.events.iter().filter(|e| e.source == Source::Dhcp))
            .take(6)
            .collect();
        if b.ended_ms.is_some() || now - user_at >= NETWORK_DEADLINE_MS {
            let dhcp_heard = b.events.iter().any(|e| e.source == Source::Dhcp);
            let why = if dhcp_heard {
                "no DHCP lease: the exchange did not complete".to_string()
            } else {
                format!(
                    "no DHCP: not one packet from the guest's NIC {:.0} s after userspace started",
                    (now - user_at) as f64 / 1000.0
                )
            };
            return failed(Stage::Network, why, down);
        }
        return booting(b, reached, ev(&proof));
    }
    if !agent_up {
        let net_at = of(Mark::Network).map(|e| e.at_ms).min().unwrap_or(user_at);
        if b.ended_ms.is_some() || now - net_at >= AGENT_DEADLINE_MS {
            let missing: Vec<&Event> = of(Mark::AgentMissing).take(2).collect();
            return failed(
                Stage::Agent,
                format!(
                    "the guest agent did not answer {:.0} s after the network came up",
                    (now - net_at) as f64 / 1000.0
                ),
                missing,
            );
        }
    }
    booting(b, reached, ev(&proof))
}

/// The stage a stuck boot is reported in: the one it did not get out of.
fn stage_lower(stuck: Stage) -> Stage {
    match stuck {
        Stage::Bootloader => Stage::Firmware,
        s => s,
    }
}

fn booting(_b: &Boot, reached: Stage, evidence: Vec<String>) -> Verdict {
    Verdict {
        outcome: Outcome::Booting,
        stage: reached.next(),
        summary: format!("booting: {reached:?} reached"),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(events: &[(i64, Source, Mark, &str)]) -> Boot {
        let mut b = Boot::new(1, "start", 0, "x".into());
        b.push(0, Source::Vmnode, Mark::Firmware, "QEMU started");
        for (t, s, m, x) in events {
            b.push(*t, *s, *m, *x);
        }
        b
    }
    use Mark as M;
    use Source as S;

    #[test]
    fn a_full_boot_is_booted() {
        let b = boot(&[
            (500, S::Serial, M::Kernel, "Linux version 6.1"),
            (2000, S::Serial, M::Userspace, "init"),
            (3000, S::Dhcp, M::Network, "ACK 10.0.0.4"),
            (4000, S::Agent, M::Agent, "guest agent answered"),
        ]);
        let v = judge(&b, 5000);
        assert_eq!((v.outcome, v.stage), (Outcome::Booted, Stage::Booted));
        assert!(v.evidence.iter().any(|e| e.contains("ACK 10.0.0.4")));
    }

    #[test]
    fn a_panic_stops_in_the_kernel_with_the_panic_line() {
        let b = boot(&[
            (500, S::Serial, M::Kernel, "Linux version 6.1"),
            (
                1500,
                S::Serial,
                M::Panic,
                "Kernel panic - not syncing: No working init found",
            ),
            (1600, S::Screen, M::Panic, "Kernel panic - not syncing"),
        ]);
        let v = judge(&b, 2000);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Kernel));
        assert!(v.summary.contains("No working init found"));
        assert!(v.evidence.iter().any(|e| e.contains("screen:")));
    }

    #[test]
    fn no_dhcp_is_a_network_stop_after_its_deadline() {
        let b = boot(&[
            (500, S::Serial, M::Kernel, "Linux version"),
            (2000, S::Serial, M::Userspace, "init"),
        ]);
        assert_eq!(judge(&b, 10_000).outcome, Outcome::Booting);
        let v = judge(&b, 2000 + NETWORK_DEADLINE_MS);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Network));
        assert!(v.summary.contains("not one packet"), "{}", v.summary);
    }

    #[test]
    fn an_agent_without_network_is_still_a_network_stop() {
        let b = boot(&[
            (500, S::Serial, M::Kernel, "Linux version"),
            (2000, S::Serial, M::Userspace, "init"),
            (2500, S::Serial, M::NetworkDown, "network-down no-lease"),
            (3000, S::Agent, M::Agent, "agent answered"),
        ]);
        assert_eq!(judge(&b, 4000).outcome, Outcome::Booting);
        let v = judge(&b, 2000 + NETWORK_DEADLINE_MS);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Network));
        assert!(v.evidence.iter().any(|e| e.contains("network-down")));
    }

    #[test]
    fn no_agent_is_an_agent_stop() {
        let b = boot(&[
            (500, S::Serial, M::Kernel, "Linux version"),
            (2000, S::Serial, M::Userspace, "init"),
            (3000, S::Dhcp, M::Network, "ACK"),
        ]);
        assert_eq!(judge(&b, 3000 + 1000).outcome, Outcome::Booting);
        let v = judge(&b, 3000 + AGENT_DEADLINE_MS);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Agent));
    }

    #[test]
    fn silence_before_the_kernel_is_a_firmware_stop() {
        let b = boot(&[]);
        assert_eq!(judge(&b, 1000).outcome, Outcome::Booting);
        let v = judge(&b, USERSPACE_DEADLINE_MS);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Firmware));
        let b = boot(&[(500, S::Serial, M::Kernel, "Linux version")]);
        let v = judge(&b, USERSPACE_DEADLINE_MS);
        assert_eq!((v.outcome, v.stage), (Outcome::Failed, Stage::Initrd));
    }

    #[test]
    fn a_boot_that_ended_early_says_so() {
        let mut b = boot(&[(500, S::Serial, M::Kernel, "Linux version")]);
        b.ended_ms = Some(900);
        b.end_reason = Some("powered off".into());
        let v = judge(&b, 100_000);
        assert_eq!(v.outcome, Outcome::Ended);
        assert!(v.summary.contains("powered off"));
    }
}
