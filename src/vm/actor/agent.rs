//! The actor's side of the guest agent: its Ready / Not Ready status for the instance view
//! (`vmAgent`), and OS provisioning (`vm/provision.rs`): started the first time the agent
//! answers after create, timed out (`OSProvisioningTimedOut`) if it never does, its steps put on
//! the boot timeline. A provisioning failure leaves the VM running, as in the cloud.

use std::time::Duration;

use super::Actor;
use crate::diagnostics::boots::{Mark, Source};
use crate::storage::db::Kind;
use crate::vm::model::{ErrorBody, OsProvisioning, ProvisioningState, VmAgent};
use crate::vm::provision::{self, Progress};

/// An agent that has not answered for this long is Not Ready (three polls: one busy moment, such
/// as a client of the agent socket outside vmnode, does not flip it).
const NOT_READY_AFTER: Duration = Duration::from_secs(30);

pub(super) const TIMED_OUT: &str = "OSProvisioningTimedOut";
pub(super) const CLIENT_ERROR: &str = "OSProvisioningClientError";

/// One probe of the agent.
pub struct AgentProbe {
    /// The boot it was made in (answers from an earlier boot are dropped).
    pub boot: u32,
    pub answer: Answer,
}

pub enum Answer {
    /// It answered; its version if `guest-info` said.
    Yes(Option<String>),
    /// Another session holds the agent (provisioning, an extension): no news.
    Busy,
    No,
}

impl Actor {
    /// Publishes the record without moving `state_time`, persisting it only when asked (the
    /// agent's answers come every 10 s; only its Ready/Not Ready changes are worth a write).
    fn publish_quiet(&mut self, persist: bool) {
        if persist {
            if let Err(e) = self.node.db.put(Kind::Vm, &self.rec.key(), &self.rec) {
                tracing::error!(error = %super::chain(&e), "cannot persist VM state");
            }
        }
        self.state.send_replace(self.rec.clone());
    }

    /// A new boot: the agent is not ready until it answers in it.
    pub(super) fn agent_down(&mut self) {
        self.agent_seen = None;
        if let Some(a) = self.rec.vm_agent.as_mut() {
            if a.ready {
                a.ready = false;
                self.publish_quiet(true);
            }
        }
    }

    pub(super) fn agent_up(&mut self, version: Option<String>) {
        self.agent_seen = Some(tokio::time::Instant::now());
        let a = self.rec.vm_agent.get_or_insert_with(VmAgent::default);
        let changed = !a.ready || (version.is_some() && a.version != version);
        a.ready = true;
        if version.is_some() {
            a.version = version;
        }
        a.last_answer = Some(crate::report::time_now());
        if changed {
            tracing::info!(version = ?a.version, "guest agent Ready");
        }
        self.publish_quiet(changed);
        self.maybe_provision();
    }

    pub(super) fn agent_silent(&mut self) {
        let ready = self.rec.vm_agent.as_ref().is_some_and(|a| a.ready);
        let gone = self
            .agent_seen
            .is_none_or(|t| t.elapsed() >= NOT_READY_AFTER);
        if ready && gone {
            if let Some(a) = self.rec.vm_agent.as_mut() {
                a.ready = false;
            }
            tracing::warn!("guest agent Not Ready: no answer for {NOT_READY_AFTER:?}");
            self.diag.event(
                Source::Agent,
                Mark::Info,
                format!("the guest agent stopped answering (Not Ready after {NOT_READY_AFTER:?})"),
            );
            self.publish_quiet(true);
        }
    }

    /// Starts OS provisioning if it is still to do (or timed out: the cloud, too, lets a late
    /// agent finish) and not running already.
    fn maybe_provision(&mut self) {
        let todo = matches!(
            self.rec.os_provisioning,
            OsProvisioning::Pending | OsProvisioning::TimedOut
        );
        if !todo || self.provisioning {
            return;
        }
        self.provisioning = true;
        tracing::info!("OS provisioning through the guest agent");
        self.diag.event(
            Source::Agent,
            Mark::Info,
            "provisioning: the guest agent answered; setting host name, admin user and keys",
        );
        let plan = provision::Plan::of(&self.rec);
        tokio::spawn(provision::run(
            self.agent.clone(),
            plan,
            self.prov_tx.clone(),
        ));
    }

    pub(super) fn provision_progress(&mut self, p: Progress) {
        match p {
            Progress::Step(s) => {
                tracing::info!(step = %s, "provisioning");
                self.diag
                    .event(Source::Agent, Mark::Info, format!("provisioning: {s}"));
            }
            Progress::Done(Ok(summary)) => {
                self.provisioning = false;
                tracing::info!(%summary, "OS provisioning succeeded");
                self.diag.event(
                    Source::Agent,
                    Mark::Info,
                    format!("provisioning succeeded: {summary}"),
                );
                self.rec.os_provisioning = OsProvisioning::Succeeded;
                self.rec.os_provisioning_message = Some(summary);
                // A late agent finishes what had timed out: the VM is whole after all.
                if self.rec.provisioning_state == ProvisioningState::Failed
                    && self.rec.error.as_ref().is_some_and(|e| e.code == TIMED_OUT)
                {
                    self.rec.provisioning_state = ProvisioningState::Succeeded;
                    self.rec.error = None;
                }
                self.publish();
            }
            Progress::Done(Err(e)) if e.retryable() => {
                self.provisioning = false;
                let why = super::chain(&e);
                tracing::warn!(error = %why, "OS provisioning interrupted; retried when the agent answers");
                self.diag.event(
                    Source::Agent,
                    Mark::Info,
                    format!("provisioning interrupted ({why}); retried at the agent's next answer"),
                );
            }
            Progress::Done(Err(e)) => {
                self.provisioning = false;
                let why = super::chain(&e);
                tracing::error!(error = %why, "OS provisioning failed");
                self.diag.event(
                    Source::Agent,
                    Mark::Info,
                    format!("provisioning failed: {why}"),
                );
                self.rec.os_provisioning = OsProvisioning::Failed;
                self.fail_provisioning(
                    CLIENT_ERROR,
                    format!(
                        "OS Provisioning for VM '{}' failed in the guest: {why}.",
                        self.rec.name
                    ),
                );
            }
        }
    }

    /// `OSProvisioningTimedOut` once the agent has not answered for the provisioning timeout
    /// since create (counted while the VM runs; the VM keeps running).
    pub(super) fn check_provision_timeout(&mut self) {
        if self.rec.os_provisioning != OsProvisioning::Pending || self.provisioning {
            return;
        }
        let limit = self.node.cfg.provision_timeout;
        let waited = self
            .rec
            .os_provisioning_since
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if waited < limit {
            return;
        }
        tracing::error!(
            ?limit,
            "OS provisioning timed out: the guest agent never answered"
        );
        self.diag.event(
            Source::Vmnode,
            Mark::Info,
            format!("provisioning timed out: the guest agent did not answer within {limit:?}"),
        );
        self.rec.os_provisioning = OsProvisioning::TimedOut;
        self.fail_provisioning(
            TIMED_OUT,
            format!(
                "OS Provisioning for VM '{}' did not finish in the allotted time ({} s): the guest agent never answered. The VM may still finish provisioning successfully. Please check provisioning state later.",
                self.rec.name,
                limit.as_secs()
            ),
        );
    }

    /// The VM's provisioningState Failed with `code`; the message points at the serial log.
    fn fail_provisioning(&mut self, code: &str, message: String) {
        let log = self.serial_log_uri();
        let message = format!(
            "{message} The VM keeps running. Its serial log shows how the guest booted: `vmnode vm boot-diagnostics get-boot-log -g {} -n {}`{}.",
            self.rec.rg,
            self.rec.name,
            log.map(|u| format!(" or the blob {u}")).unwrap_or_default()
        );
        self.rec.provisioning_state = ProvisioningState::Failed;
        self.rec.error = Some(ErrorBody {
            code: code.into(),
            message,
            details: vec![],
        });
        self.publish();
    }

    /// `http://{blob}/{account}/{container}/{vm}.{vmId}.serialconsole.log`.
    fn serial_log_uri(&self) -> Option<String> {
        let container = self.rec.serial_log.parent()?;
        let account = container.parent()?.file_name()?.to_string_lossy();
        Some(format!(
            "http://{}/{account}/{}/{}",
            self.node.cfg.blob_listen,
            container.file_name()?.to_string_lossy(),
            crate::diagnostics::serial_log_name(&self.rec.name, &self.rec.vm_id)
        ))
    }
}
