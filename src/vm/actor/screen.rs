//! The actor's side of boot diagnostics: screenshots into the recorder's series, and the
//! periodic work of the flight recorder (serial pump, DHCP ledger, agent probe, QMP events).

use std::time::Duration;

use super::agent::{AgentProbe, Answer};
use super::{chain, Actor, ActorError};
use crate::diagnostics::boots::{Mark, Source};
use crate::diagnostics::verdict::Outcome;
use crate::qemu::qga::QgaError;
use crate::qemu::qmp::QmpEvent;

/// How often the agent is probed while a boot waits for it.
const AGENT_PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often a running VM's agent is asked whether it still answers (its Ready status).
const AGENT_POLL_EVERY: Duration = Duration::from_secs(10);
/// Boots are watched (screenshots, agent probes) this long at most.
const WATCH_FOR_MS: i64 = 300_000;
/// No periodic capture in a boot's first second: QEMU is still loading the kernel and the screen
/// is blank, and a screendump then waits on it (the slowest captures measured were these).
/// Milestones still get theirs, and a boot stuck in firmware is caught by the next period.
const FIRST_SHOT_AFTER_MS: i64 = 1_000;

impl Actor {
    /// `{container}/{vm}.{vmId}.screenshot.{ext}`, as the cloud names it (`bmp`; `png` beside).
    pub(super) fn shot_path(&self, ext: &str) -> std::path::PathBuf {
        self.diag_dir().join(crate::diagnostics::screenshot_name(
            &self.rec.name,
            &self.rec.vm_id,
            ext,
        ))
    }

    pub(super) fn diag_dir(&self) -> std::path::PathBuf {
        self.rec
            .serial_log
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }

    /// Captures the display through QMP `screendump`, stores it as BMP and PNG, reads its text
    /// and adds it to the current boot's series. QEMU may open no path (qemu/jail.rs): the
    /// daemon opens the PPM file in the VM's run dir and hands it over (`add-fd`), QEMU writes
    /// `/dev/fdset/N`, and the set is dropped again.
    pub(super) async fn screenshot(&mut self) -> Result<std::path::PathBuf, ActorError> {
        use std::os::fd::AsFd;
        use std::os::unix::fs::OpenOptionsExt;
        let started = std::time::Instant::now();
        let q = self
            .qmp
            .clone()
            .ok_or(ActorError::NoMonitor("the VM is not running"))?;
        // A silent monitor would hold the actor for the screendump's whole timeout again.
        if self.rec.power == crate::vm::model::PowerState::Unknown {
            return Err(ActorError::NoMonitor(
                "QEMU's monitor does not answer (VM status unknown)",
            ));
        }
        let ppm = self.run.screen.clone();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&ppm)
            .map_err(|e| ActorError::io(ppm.display().to_string(), e))?;
        let set = crate::qemu::argv::SCREENDUMP_SET;
        if let Err(e) = q.add_fd(f.as_fd(), set, "screendump").await {
            // Timed out: the monitor does not answer (actor/health.rs); say so now, so the next
            // capture does not wait on it again.
            if matches!(e, crate::qemu::qmp::QmpError::Timeout { .. }) {
                self.monitor_silent(&chain(&e));
            }
            return Err(ActorError::qmp("handing the screendump file to QEMU", e));
        }
        drop(f);
        let cmd = qapi::qmp::screendump {
            filename: format!("/dev/fdset/{set}"),
            device: None,
            head: None,
            format: None,
        };
        let dumped = q.execute(cmd).await;
        if let Err(e) = dumped {
            // A screendump that timed out is a monitor that does not answer (actor/health.rs);
            // the fd set is left to QEMU rather than waiting on it again.
            if matches!(e, crate::qemu::qmp::QmpError::Timeout { .. }) {
                self.monitor_silent(&chain(&e));
            } else {
                q.remove_fd(set).await;
            }
            return Err(ActorError::qmp("screendump", e));
        }
        q.remove_fd(set).await;
        let dump_us = started.elapsed().as_micros() as u64;
        if self.kernel.is_none() {
            self.kernel = self.image().ok().map(|i| i.kernel());
        }
        let (bmp, png) = (self.shot_path("bmp"), self.shot_path("png"));
        let (ppm2, bmp2, png2, kernel) =
            (ppm.clone(), bmp.clone(), png.clone(), self.kernel.clone());
        let fonts = self.node.fonts.clone();
        let (img_hash, w, h, text, store_us) = tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let img = crate::diagnostics::screenshot::store(&ppm2, &bmp2, &png2)?;
            let store_us = t.elapsed().as_micros() as u64;
            let text = kernel
                .and_then(|k| fonts.for_kernel_now(&k))
                .map(|f| crate::diagnostics::screen_text::read(&img, &f))
                .unwrap_or_default();
            // The same text is the same screen, whatever the cursor's blink did to the pixels.
            let hash = match crate::diagnostics::screen_text::identity(&text) {
                Some(t) => {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (img.width, img.height, t).hash(&mut h);
                    h.finish()
                }
                None => crate::diagnostics::screenshot::hash(&img),
            };
            Ok::<_, crate::diagnostics::screenshot::ShotError>((
                hash, img.width, img.height, text, store_us,
            ))
        })
        .await
        .map_err(ActorError::Join)?
        .map_err(ActorError::Shot)?;
        let _ = std::fs::remove_file(&ppm);
        self.diag.frame(img_hash, w, h, &png, &text);
        let elapsed_us = started.elapsed().as_micros() as u64;
        // The whole capture, the QMP screendump within it, and the PPM -> BMP + PNG store.
        tracing::debug!(w, h, elapsed_us, dump_us, store_us, "screenshot");
        Ok(png)
    }

    /// The flight recorder's periodic work (every half second).
    pub(super) async fn diag_tick(&mut self) {
        self.diag.pump();
        let running = self.qmp.is_some();
        // A boot milestone (kernel, userspace, network, login, panic) gets its own screenshot.
        if self.diag.take_milestone() && running && self.node.cfg.boot_screenshots {
            if let Err(e) = self.screenshot().await {
                tracing::debug!(error = %e, "milestone screenshot");
            }
        }
        if running {
            let ledger = self.node.net.ledger(&self.rec.nic.mac);
            self.diag.dhcp(&ledger);
        }
        let watching = running
            && self
                .diag
                .current()
                .is_some_and(|(_, age)| age < WATCH_FOR_MS);
        // Every 2 s while a boot waits for the agent, then every 10 s (Ready / Not Ready).
        let every = if watching && !self.diag.has(Mark::Agent) {
            Some(AGENT_PROBE_EVERY)
        } else {
            running.then_some(AGENT_POLL_EVERY)
        };
        if let (Some(every), false) = (every, self.agent_probing) {
            if self.agent_probed.is_none_or(|t| t.elapsed() >= every) {
                self.probe_agent();
            }
        }
        if running {
            self.check_provision_timeout();
        }
        self.diag.save_if_dirty();
    }

    /// Screenshots during a boot: every few seconds until it has booted (then one more of the
    /// final screen), or for the first minutes of a boot that is stuck or failed.
    pub(super) async fn boot_shot(&mut self) {
        if self.qmp.is_none() || !self.node.cfg.boot_screenshots {
            return;
        }
        let Some((n, age)) = self.diag.current() else {
            return;
        };
        // A failed boot is watched on (its screen may be frozen: that is evidence too).
        let booted = matches!(
            self.diag.verdict().map(|(_, v)| v.outcome),
            Some(Outcome::Booted)
        );
        let take = if booted {
            self.final_shot != Some(n)
        } else {
            (FIRST_SHOT_AFTER_MS..WATCH_FOR_MS).contains(&age)
        };
        if take {
            if booted {
                self.final_shot = Some(n);
            }
            if let Err(e) = self.screenshot().await {
                tracing::debug!(error = %e, "boot screenshot");
            }
        }
    }

    /// Asks the guest agent for a sync (and its version), off the actor's task, never queueing
    /// behind another session (`try_connect`); the answer comes back on `agent_rx`.
    fn probe_agent(&mut self) {
        let Some((n, _)) = self.diag.current() else {
            return;
        };
        self.agent_probing = true;
        self.agent_probed = Some(tokio::time::Instant::now());
        let agent = self.agent.clone();
        let tx = self.agent_tx.clone();
        tokio::spawn(async move {
            let answer = match agent.try_connect(Duration::from_secs(1)).await {
                Ok(mut q) => {
                    let info = q
                        .execute("guest-info", None, Duration::from_secs(2))
                        .await
                        .ok();
                    let version = info
                        .as_ref()
                        .and_then(|i| i["version"].as_str())
                        .map(str::to_string);
                    Answer::Yes(version)
                }
                Err(QgaError::Busy) => Answer::Busy,
                Err(_) => Answer::No,
            };
            let _ = tx.send(AgentProbe { boot: n, answer }).await;
        });
    }

    pub(super) fn agent_answer(&mut self, probe: AgentProbe) {
        self.agent_probing = false;
        let current = self.diag.current().is_some_and(|(n, _)| n == probe.boot);
        if !current {
            return;
        }
        match probe.answer {
            Answer::Yes(version) => {
                if !self.diag.has(Mark::Agent) {
                    tracing::info!("guest agent answering");
                    self.diag.event(
                        Source::Agent,
                        Mark::Agent,
                        "the guest agent answered guest-sync",
                    );
                }
                self.agent_up(version);
            }
            // Another session holds the agent: it answers, but this says nothing new.
            Answer::Busy => {}
            Answer::No => self.agent_silent(),
        }
    }

    /// A QMP event: resets start a new boot; the rest go on the timeline.
    pub(super) fn qmp_event(&mut self, ev: QmpEvent) {
        let reason = ev.data["reason"].as_str().unwrap_or("").to_string();
        match ev.name.as_str() {
            "RESET" => {
                let why = if reason.starts_with("host") {
                    "restart"
                } else {
                    "guest reboot"
                };
                // Firmware resets the machine once more on its way to the kernel (SeaBIOS
                // after a system_reset): that is the same boot.
                let early = self.diag.current().is_some_and(|(_, age)| age < 5_000)
                    && !self.diag.has(Mark::Kernel);
                if early && why == "guest reboot" {
                    self.diag.event(
                        Source::Qmp,
                        Mark::Info,
                        format!("RESET ({reason}) before the kernel started"),
                    );
                    return;
                }
                tracing::info!(%reason, "guest reset: new boot");
                self.diag.begin_boot(why, false);
                self.agent_probing = false;
                self.agent_down();
                self.rec.last_boot = Some(std::time::SystemTime::now());
            }
            "SHUTDOWN" => self
                .diag
                .event(Source::Qmp, Mark::Info, format!("SHUTDOWN ({reason})")),
            "GUEST_PANICKED" => self.diag.event(
                Source::Qmp,
                Mark::Panic,
                format!("GUEST_PANICKED {}", ev.data),
            ),
            "STOP" | "RESUME" | "POWERDOWN" | "WAKEUP" | "SUSPEND" => {
                self.diag.event(Source::Qmp, Mark::Info, ev.name.clone())
            }
            _ => {}
        }
    }
}
