//! Re-adoption after a daemon restart: the VM's state rebuilt from the live system (pidfile,
//! `/proc/<pid>/cmdline` with the vmId, QMP), and what was interrupted handed back to finish.

use super::*;

impl Actor {
    /// Rebuilds the VM's state from the live system after a daemon restart. Returns what was
    /// interrupted and must be finished.
    pub(super) async fn adopt(&mut self) -> Resume {
        let run = self.run.clone();
        let pid = process::read_pidfile(&run.pidfile).or(self.rec.pid);
        let alive = pid
            .filter(|p| process::pid_is_vm(*p, &self.rec.vm_id))
            // Killed between spawn and pidfile (the daemon writes it now): find QEMU by its UUID.
            .or_else(|| process::find_vm(&self.rec.vm_id));
        let intent = matches!(
            self.node
                .db
                .get::<serde_json::Value>(Kind::DeleteIntent, &self.rec.key()),
            Ok(Some(_))
        );
        if self.rec.provisioning_state == ProvisioningState::Deleting || intent {
            tracing::info!("resuming an interrupted delete");
            self.rec.pid = alive;
            return Resume::Delete;
        }
        let mut resume = Resume::Nothing;
        match alive {
            Some(pid) => {
                self.rec.pid = Some(pid);
                // Found by its UUID (the daemon was killed before writing the pidfile): write
                // it now, so the next restart finds it the quick way.
                if process::read_pidfile(&run.pidfile) != Some(pid) {
                    if let Err(e) = process::write_pidfile(&run.pidfile, pid) {
                        tracing::warn!(error = %e, "cannot write the re-adopted QEMU's pidfile");
                    }
                }
                match self.connect_qmp(&run).await {
                    Some((qmp, status)) => {
                        tracing::info!(pid, %status, "re-adopted running QEMU");
                        resume = match self.rec.power {
                            PowerState::Stopping => Resume::Power(PowerOp::PowerOff {
                                skip_shutdown: false,
                            }),
                            PowerState::Deallocating => Resume::Power(PowerOp::Deallocate),
                            _ => Resume::Nothing,
                        };
                        // A crash between spawn and admit would leave the tap shut: re-admit.
                        let (net, nic) = (self.node.net.clone(), self.rec.nic.clone());
                        if let Ok(Err(e)) =
                            tokio::task::spawn_blocking(move || net.admit(&nic)).await
                        {
                            tracing::error!(error = %chain(&e), "cannot admit the NIC's tap");
                        }
                        self.rec.power = PowerState::Running;
                        if self.rec.provisioning_state == ProvisioningState::Creating {
                            self.rec.provisioning_state = ProvisioningState::Succeeded;
                        }
                        self.adopt_resumed(&qmp, pid).await;
                        self.events = Some(qmp.events());
                        self.qmp = Some(qmp);
                        if self.diag.current().is_none() {
                            self.diag.begin_boot("re-adopted", false);
                        }
                        self.plug_missing().await;
                    }
                    None => {
                        tracing::warn!(pid, "QEMU is alive but QMP is unreachable: state unknown");
                        self.rec.power = PowerState::Unknown;
                    }
                }
            }
            None => {
                if self.rec.provisioning_state == ProvisioningState::Creating {
                    self.rec.provisioning_state = ProvisioningState::Failed;
                    self.rec.error = Some(ErrorBody {
                        code: "VMProvisioningFailed".into(),
                        message: "the daemon stopped while the VM was being created; delete it and create it again".into(),
                        details: vec![],
                    });
                }
                self.rec.power = match self.rec.power {
                    PowerState::Deallocating | PowerState::Deallocated => {
                        self.drop_temp_disk();
                        PowerState::Deallocated
                    }
                    _ => PowerState::Stopped,
                };
                self.rec.pid = None;
            }
        }
        // An interrupted stop or deallocate is still under way: show it so, not `running` for
        // the moment before the actor resumes it (a client polling then would read a VM it
        // asked to stop as running). The actor starts the operation over from running.
        if let Resume::Power(op) = &resume {
            self.rec.power = match op {
                PowerOp::Deallocate => PowerState::Deallocating,
                _ => PowerState::Stopping,
            };
        }
        self.publish();
        resume
    }

    pub(super) async fn connect_qmp(&self, run: &VmRunDir) -> Option<(Qmp, String)> {
        for _ in 0..20 {
            if let Ok(q) = Qmp::connect(&run.qmp, Some(run.transcript.clone())).await {
                if let Ok(s) = q.execute(qapi::qmp::query_status {}).await {
                    let status = serde_json::to_value(s.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    return Some((q, status));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
