//! Whether QEMU's monitor still answers, and what the VM is shown as when it does not.
//!
//! ```text
//!   running ──query-status times out / QMP closed, QEMU alive──▶ unknown (QEMU left alone)
//!   unknown ──query-status answers / QMP reconnects──────────▶ running
//!   running|unknown ──QEMU gone (pid)──────────────────────────▶ stopped (the exit paths)
//! ```
//! Every [`PROBE_EVERY`] a running or unknown VM's QEMU is asked `query-status` (with the QMP
//! client's query timeout) in a task of its own, so a hung monitor never blocks the actor's
//! queue. A timeout says only that QEMU is slow or stopped — never that it is dead — so the VM
//! becomes `unknown` and nothing is killed. Without a connection (it closed, or it could not be
//! made when the daemon re-adopted the VM) the probe connects to the socket again, and the VM
//! comes back as soon as QMP answers.
//!
//! A guest whose disk write failed for want of space is paused by QEMU (`io-error`: its default
//! `werror=enospc`); it stays `running` here (its QEMU is there), the pause is logged once, and
//! the probe resumes it (`cont`) as soon as the state dir has room again (`storage::health`).

use std::time::Duration;

use super::{chain, Actor};
use crate::diagnostics::boots::{Mark, Source};
use crate::qemu::qmp::Qmp;
use crate::vm::model::PowerState;

/// How often a running (or unknown) VM's monitor is asked whether it is there.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(5);

/// What one probe found.
pub enum Health {
    /// The connection we have answered `query-status`.
    Answered(String),
    /// A new connection was made (the old one was gone) and it answered.
    Reconnected(Qmp, String),
    /// No answer: why.
    NoAnswer(String),
}

fn status_name(s: &qapi::qmp::StatusInfo) -> String {
    serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Actor {
    /// Starts a probe unless one is in flight or there is no live QEMU to ask.
    pub(super) fn health_tick(&mut self) {
        if self.health_probing
            || !matches!(self.rec.power, PowerState::Running | PowerState::Unknown)
            || !self.alive()
        {
            return;
        }
        self.health_probing = true;
        let tx = self.health_tx.clone();
        let qmp = self.qmp.clone();
        let run = self.run.clone();
        tokio::spawn(async move {
            let found = match qmp {
                Some(q) => match q.execute(qapi::qmp::query_status {}).await {
                    Ok(s) => Health::Answered(status_name(&s)),
                    Err(e) => Health::NoAnswer(chain(&e)),
                },
                None => match Qmp::connect(&run.qmp, Some(run.transcript)).await {
                    Ok(q) => match q.execute(qapi::qmp::query_status {}).await {
                        Ok(s) => Health::Reconnected(q, status_name(&s)),
                        Err(e) => Health::NoAnswer(chain(&e)),
                    },
                    Err(e) => Health::NoAnswer(format!("{}: {}", run.qmp.display(), chain(&e))),
                },
            };
            let _ = tx.send(found).await;
        });
    }

    pub(super) fn health_answer(&mut self, h: Health) {
        self.health_probing = false;
        // The probe may have been overtaken by a power operation or QEMU's exit.
        if !matches!(self.rec.power, PowerState::Running | PowerState::Unknown) {
            return;
        }
        match h {
            Health::Answered(status) => {
                if status == "io-error" {
                    self.io_error_pause();
                }
                self.monitor_back(&status, "QMP answers again")
            }
            Health::Reconnected(q, status) => {
                self.events = Some(q.events());
                self.qmp = Some(q);
                // A re-adopted VM that never reached QMP was not re-admitted through the filter.
                let (net, nic) = (self.node.net.clone(), self.rec.nic.clone());
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = net.admit(&nic) {
                        tracing::error!(error = %chain(&e), "cannot admit the NIC's tap");
                    }
                });
                self.monitor_back(&status, "QMP reconnected");
            }
            Health::NoAnswer(why) => self.monitor_silent(&why),
        }
    }

    /// A QMP command got no answer in its time (a probe, or any command that timed out): if
    /// QEMU is alive, the VM is `unknown`, and QEMU is left alone.
    pub(super) fn monitor_silent(&mut self, why: &str) {
        if !self.alive() {
            // QEMU's exit is the child-exit or QMP-closed path's to handle.
            return;
        }
        if self.rec.power == PowerState::Running {
            tracing::warn!(
                error = %why,
                pid = ?self.rec.pid,
                "QEMU is alive but its monitor does not answer: state unknown; QEMU is left running"
            );
            self.diag.event(
                Source::Qmp,
                Mark::Info,
                format!("QMP does not answer ({why}): VM status unknown"),
            );
            self.set_power(PowerState::Unknown);
        } else {
            tracing::debug!(error = %why, "QMP still unreachable");
        }
    }

    /// The guest is paused on a failed disk write: resumed when the state dir has room again.
    fn io_error_pause(&mut self) {
        let Some(q) = self.qmp.clone() else { return };
        match self.node.health.check(&self.node.cfg.paths.state) {
            Err(e) => {
                if !self.io_paused {
                    tracing::warn!(error = %chain(&e), "the guest is paused by a failed disk write (io-error): it resumes when the state dir has room again");
                    self.diag.event(
                        Source::Qmp,
                        Mark::Info,
                        "guest paused by a failed disk write (io-error)".to_string(),
                    );
                    self.io_paused = true;
                }
            }
            Ok(()) => {
                tracing::info!("the state dir has room again: the guest paused by a failed disk write is resumed");
                self.diag.event(
                    Source::Qmp,
                    Mark::Info,
                    "guest resumed after a failed disk write (cont)".to_string(),
                );
                self.io_paused = false;
                tokio::spawn(async move {
                    if let Err(e) = q.execute(qapi::qmp::cont {}).await {
                        tracing::warn!(error = %chain(&e), "cont after an io-error pause");
                    }
                });
            }
        }
    }

    fn monitor_back(&mut self, status: &str, what: &str) {
        if self.rec.power == PowerState::Unknown {
            tracing::info!(%status, pid = ?self.rec.pid, "{what}: VM running");
            self.diag
                .event(Source::Qmp, Mark::Info, format!("{what}: {status}"));
            self.set_power(PowerState::Running);
        }
    }
}
