//! VM agent extensions (CustomScript, Linux and Windows-style) and Run Command.
//!
//! ```text
//!   PUT ──▶ Creating/Updating ──(queue: one run per VM at a time)──▶ handler run ──▶ Succeeded
//!            (seq n, same config + tag: nothing runs)                          └──▶ Failed + error
//! ```
//! A configuration runs once: a PUT whose settings, protectedSettings and forceUpdateTag are the
//! stored ones changes nothing (as in the cloud); any change runs it again with the next sequence
//! number, without uninstalling. Records live in the SQLite store (`Kind::Extension`), so they
//! survive restarts (a run cut by a restart runs again at start); they go with their VM.
//!
//! | file | role |
//! |---|---|
//! | `model.rs` | the stored record, the handlers, a run's outcome; the ARM rendering |
//! | `settings.rs` | fileUris / commandToExecute / script from settings or protectedSettings; refusals |
//! | `secret.rs` | protectedSettings sealed at rest with the node key (`state/extensions.key`) |
//! | `download.rs` | fileUris fetched on the node by a real HTTP(S) GET |
//! | `handler.rs` | one run: downloads → guest agent (files, `/bin/sh -c`) → result; the handler log |
//! | `status.rs` | instance view, the cloud's `VMExtensionProvisioningError` text, Run Command's result |
//! | `runcommand.rs` | Run Command |

pub mod download;
pub mod handler;
pub mod model;
pub mod runcommand;
pub mod secret;
pub mod settings;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::storage::db::{DbError, Kind};
use crate::vm::model::{vm_key, PowerState};
use crate::vm::{Node, VmError};
use model::{ext_key, ErrorBody, ExtensionRecord, Handler, ProvisioningState};

#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("The Resource 'Microsoft.Compute/virtualMachines/{1}/extensions/{0}' under resource group '{2}' was not found.")]
    NotFound(String, String, String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("state store")]
    Db(#[from] DbError),
    #[error("protectedSettings")]
    Secret(#[from] secret::SecretError),
    /// The configuration's settings are not ones the handler can run (a 400).
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    /// A Run Command the node does not offer (a 400).
    #[error(transparent)]
    RunCommand(#[from] runcommand::ScriptError),
}

/// What a PUT asks for, after parsing.
pub struct PutExtension {
    pub location: Option<String>,
    pub publisher: String,
    pub ext_type: String,
    pub type_handler_version: String,
    pub auto_upgrade_minor_version: bool,
    pub settings: Map<String, Value>,
    pub protected: Option<Map<String, Value>>,
    pub force_update_tag: Option<String>,
    pub tags: Map<String, Value>,
}

pub enum Put {
    /// A new extension; its run is tracked by the operation.
    Created(ExtensionRecord, String),
    /// A changed configuration runs again.
    Updated(ExtensionRecord, String),
    /// The same configuration and tag: nothing runs.
    Unchanged(ExtensionRecord),
}

pub struct Extensions {
    node: Arc<Node>,
    sealer: Mutex<Option<Arc<secret::Sealer>>>,
    /// Read-modify-write of records, one at a time.
    write: Mutex<()>,
    /// One run at a time per VM (the cloud's agent also handles a VM's extensions in turn).
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Extensions {
    pub fn new(node: Arc<Node>) -> Arc<Extensions> {
        Arc::new(Extensions {
            node,
            sealer: Mutex::new(None),
            write: Mutex::new(()),
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// The node key, made at first use.
    fn sealer(&self) -> Result<Arc<secret::Sealer>, ExtError> {
        let mut s = lock(&self.sealer);
        if let Some(k) = &*s {
            return Ok(k.clone());
        }
        let k = Arc::new(secret::Sealer::open_or_create(
            &self.node.cfg.paths.state.join("extensions.key"),
        )?);
        *s = Some(k.clone());
        Ok(k)
    }

    fn unseal(&self, r: &ExtensionRecord) -> Result<Map<String, Value>, ExtError> {
        let Some(sealed) = &r.protected_sealed else {
            return Ok(Map::new());
        };
        let plain = self.sealer()?.open(sealed, &r.key())?;
        serde_json::from_slice(&plain).map_err(|_| secret::SecretError::Open.into())
    }

    pub fn get(&self, rg: &str, vm: &str, name: &str) -> Result<ExtensionRecord, ExtError> {
        let rec = self
            .node
            .get(rg, vm)
            .ok_or_else(|| VmError::NotFound(vm.into(), rg.into()))?;
        self.node
            .db
            .get::<ExtensionRecord>(Kind::Extension, &ext_key(rg, vm, name))?
            .filter(|r| r.vm_id == rec.vm_id)
            .ok_or_else(|| ExtError::NotFound(name.into(), vm.into(), rg.into()))
    }

    /// A VM's extensions, by name.
    pub fn list(&self, rg: &str, vm: &str) -> Result<Vec<ExtensionRecord>, ExtError> {
        let Some(v) = self.node.get(rg, vm) else {
            return Err(VmError::NotFound(vm.into(), rg.into()).into());
        };
        let prefix = format!("{}/", vm_key(rg, vm));
        Ok(self
            .node
            .db
            .list::<ExtensionRecord>(Kind::Extension)?
            .into_iter()
            .filter(|r| r.key().starts_with(&prefix) && r.vm_id == v.vm_id)
            .collect())
    }

    pub fn delete(&self, rg: &str, vm: &str, name: &str) -> Result<bool, ExtError> {
        self.node
            .get(rg, vm)
            .ok_or_else(|| VmError::NotFound(vm.into(), rg.into()))?;
        let _w = lock(&self.write);
        Ok(self
            .node
            .db
            .delete(Kind::Extension, &ext_key(rg, vm, name))?)
    }

    /// Creates or updates an extension; runs it when its configuration is new or changed.
    pub fn put(
        self: &Arc<Self>,
        rg: &str,
        vm: &str,
        name: &str,
        req: PutExtension,
    ) -> Result<Put, ExtError> {
        if !self.node.rg_exists(rg)? {
            return Err(VmError::ResourceGroupNotFound(rg.into()).into());
        }
        let v = self
            .node
            .get(rg, vm)
            .ok_or_else(|| VmError::NotFound(vm.into(), rg.into()))?;
        crate::vm::validate_vm_name(name).map_err(|_| {
            ExtError::InvalidParameter(format!(
                "The extension name '{name}' is invalid: use 1-64 letters, digits, '-', '_' or '.'."
            ))
        })?;
        let handler = Handler::of(&req.publisher, &req.ext_type).ok_or_else(|| {
            ExtError::InvalidParameter(format!(
                "The extension '{}/{}' is not available on this node: it runs Microsoft.Azure.Extensions/CustomScript (2.x) and Microsoft.Compute/CustomScriptExtension (its command runs in the Linux guest's /bin/sh).",
                req.publisher, req.ext_type
            ))
        })?;
        if let Some(loc) = &req.location {
            if !loc.eq_ignore_ascii_case(&v.location) {
                return Err(ExtError::InvalidParameter(format!(
                    "The location '{loc}' is not the VM's ('{}').",
                    v.location
                )));
            }
        }
        let protected = req.protected.clone().unwrap_or_default();
        settings::parse(handler, &req.settings, &protected)?;
        if !matches!(v.power, PowerState::Running | PowerState::Starting) {
            return Err(ExtError::Conflict(format!(
                "Cannot modify extensions in the VM when the VM is not running ('{}' is {}). Start it first.",
                vm,
                v.power.display()
            )));
        }
        let key = ext_key(rg, vm, name);
        let _w = lock(&self.write);
        let existing = self
            .node
            .db
            .get::<ExtensionRecord>(Kind::Extension, &key)?
            .filter(|r| r.vm_id == v.vm_id);
        if let Some(e) = &existing {
            let same = Handler::of(&e.publisher, &e.ext_type) == Some(handler)
                && e.type_handler_version == req.type_handler_version
                && e.settings == req.settings
                && e.force_update_tag == req.force_update_tag
                && self.unseal(e)? == protected;
            if same {
                if e.tags != req.tags
                    || e.auto_upgrade_minor_version != req.auto_upgrade_minor_version
                {
                    let mut e = e.clone();
                    e.tags = req.tags;
                    e.auto_upgrade_minor_version = req.auto_upgrade_minor_version;
                    self.node.db.put(Kind::Extension, &key, &e)?;
                    return Ok(Put::Unchanged(e));
                }
                return Ok(Put::Unchanged(e.clone()));
            }
        }
        let protected_sealed = match &req.protected {
            Some(p) if !p.is_empty() => Some(
                self.sealer()?
                    .seal(&serde_json::to_vec(p).unwrap_or_default(), &key)?,
            ),
            _ => None,
        };
        let rec = ExtensionRecord {
            rg: v.rg.clone(),
            vm: v.name.clone(),
            vm_id: v.vm_id.clone(),
            name: existing
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| name.into()),
            location: v.location.clone(),
            publisher: req.publisher,
            ext_type: req.ext_type,
            handler,
            type_handler_version: req.type_handler_version,
            auto_upgrade_minor_version: req.auto_upgrade_minor_version,
            settings: req.settings,
            protected_sealed,
            force_update_tag: req.force_update_tag,
            tags: req.tags,
            provisioning_state: if existing.is_some() {
                ProvisioningState::Updating
            } else {
                ProvisioningState::Creating
            },
            seq: existing.as_ref().map(|e| e.seq + 1).unwrap_or(0),
            error: None,
            last_run: existing.as_ref().and_then(|e| e.last_run.clone()),
            handler_log_blob: format!("extensions/{}/handler.log", name.to_lowercase()),
        };
        self.node.db.put(Kind::Extension, &key, &rec)?;
        let op = self.node.ops.begin("extension");
        self.spawn_run(rec.clone(), op.clone())?;
        Ok(if existing.is_some() {
            Put::Updated(rec, op)
        } else {
            Put::Created(rec, op)
        })
    }

    /// Runs again what a restart interrupted (records left Creating or Updating).
    pub fn resume(self: &Arc<Self>) -> Result<usize, ExtError> {
        let mut n = 0;
        for r in self.node.db.list::<ExtensionRecord>(Kind::Extension)? {
            let vm = self.node.get(&r.rg, &r.vm).filter(|v| v.vm_id == r.vm_id);
            if vm.is_none() {
                // Its VM is gone (deleted while the daemon was down).
                self.node.db.delete(Kind::Extension, &r.key())?;
                continue;
            }
            if matches!(
                r.provisioning_state,
                ProvisioningState::Creating | ProvisioningState::Updating
            ) {
                let op = self.node.ops.begin("extension");
                self.spawn_run(r, op)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn queue(&self, rg: &str, vm: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut q = lock(&self.queues);
        q.retain(|_, l| Arc::strong_count(l) > 1);
        q.entry(vm_key(rg, vm)).or_default().clone()
    }

    fn spawn_run(self: &Arc<Self>, rec: ExtensionRecord, op: String) -> Result<(), ExtError> {
        let cfg = settings::parse(rec.handler, &rec.settings, &self.unseal(&rec)?)?;
        let job = handler::Job {
            handler: rec.handler,
            seq: rec.seq,
            file_uris: cfg.file_uris,
            command: cfg.command,
            protected: cfg.protected,
        };
        let span = tracing::info_span!("vm", name = %rec.vm, vm_id = %rec.vm_id);
        let me = self.clone();
        tokio::spawn(async move { me.run(rec, job, op).await }.instrument(span));
        Ok(())
    }

    fn current(&self, key: &str, seq: u32) -> Option<ExtensionRecord> {
        self.node
            .db
            .get::<ExtensionRecord>(Kind::Extension, key)
            .ok()
            .flatten()
            .filter(|r| r.seq == seq)
    }

    async fn run(self: Arc<Self>, rec: ExtensionRecord, job: handler::Job, op: String) {
        let queue = self.queue(&rec.rg, &rec.vm);
        let _turn = queue.lock().await;
        let key = rec.key();
        let superseded = || ErrorBody {
            code: "OperationPreempted".into(),
            message: format!(
                "Extension '{}' was changed or deleted before this configuration finished.",
                rec.name
            ),
            details: vec![],
        };
        if self.current(&key, rec.seq).is_none() {
            self.node.ops.finish_with(&op, Err(superseded()));
            return;
        }
        let target = handler::Target {
            node: self.node.clone(),
            rg: rec.rg.clone(),
            vm: rec.vm.clone(),
            vm_id: rec.vm_id.clone(),
        };
        let container = self
            .node
            .get(&rec.rg, &rec.vm)
            .and_then(|v| v.serial_log.parent().map(|p| p.to_path_buf()));
        let log = handler::HandlerLog::open(container, &rec.handler_log_blob);
        tracing::info!(extension = %rec.name, seq = rec.seq, "extension: running its configuration");
        let result = handler::run(&job, &target, &log).await;
        let _w = lock(&self.write);
        let Some(mut now) = self.current(&key, rec.seq) else {
            self.node.ops.finish_with(&op, Err(superseded()));
            return;
        };
        now.error = status::error_for(&now, &result);
        now.provisioning_state = if result.succeeded() {
            ProvisioningState::Succeeded
        } else {
            ProvisioningState::Failed
        };
        match &result.outcome {
            model::Outcome::Exited { code, .. } => {
                tracing::info!(extension = %rec.name, seq = rec.seq, exit_code = ?code, "extension: command finished")
            }
            other => {
                let kind = match other {
                    model::Outcome::DownloadFailed { .. } => "download failed",
                    _ => "guest agent failed",
                };
                tracing::warn!(extension = %rec.name, seq = rec.seq, "extension: {kind}")
            }
        }
        now.last_run = Some(result);
        if let Err(e) = self.node.db.put(Kind::Extension, &key, &now) {
            tracing::error!(error = %crate::report::chain(&e), "cannot persist the extension's state");
        }
        self.node
            .ops
            .finish_with(&op, now.error.clone().map_or(Ok(None), Err));
    }

    /// Starts a Run Command; returns the operation's id (the API's 202).
    pub fn run_command(
        self: &Arc<Self>,
        rg: &str,
        vm: &str,
        req: runcommand::Request,
    ) -> Result<String, ExtError> {
        let v = self
            .node
            .get(rg, vm)
            .ok_or_else(|| VmError::NotFound(vm.into(), rg.into()))?;
        let script = runcommand::script_for(&req)?;
        if !matches!(v.power, PowerState::Running | PowerState::Starting) {
            return Err(ExtError::Conflict(format!(
                "Run Command needs a running VM; '{vm}' is {}. Start it first.",
                v.power.display()
            )));
        }
        let op = self.node.ops.begin("runCommand");
        let target = handler::Target {
            node: self.node.clone(),
            rg: v.rg.clone(),
            vm: v.name.clone(),
            vm_id: v.vm_id.clone(),
        };
        let me = self.clone();
        let id = op.clone();
        let span = tracing::info_span!("vm", name = %v.name, vm_id = %v.vm_id);
        tokio::spawn(
            async move {
                let queue = me.queue(&target.rg, &target.vm);
                let _turn = queue.lock().await;
                let r = runcommand::run(&target, &req, &script, &id[..8]).await;
                match &r {
                    Ok(v) => tracing::info!(exit_code = %v["exitCode"], "run command finished"),
                    Err(e) => {
                        tracing::warn!(error = %crate::report::chain(e), "run command failed")
                    }
                }
                me.node.ops.finish_with(
                    &id,
                    r.map(Some).map_err(|e| ErrorBody {
                        code: "VMAgentStatusCommunicationError".into(),
                        message: format!(
                            "Run Command could not run on VM '{}': {}",
                            target.vm,
                            crate::report::chain(&e)
                        ),
                        details: vec![],
                    }),
                );
            }
            .instrument(span),
        );
        Ok(op)
    }
}
