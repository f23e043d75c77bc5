//! Template deployments (`Microsoft.Resources/deployments`): an ARM template is evaluated into a
//! plan (`template.rs`), and the plan is carried out by PUTting each resource through vmnode's
//! own API, in dependency order, waiting for each to reach a terminal provisioning state
//! (`engine.rs`). A failed resource fails the deployment with the cloud's nested error:
//! `DeploymentFailed` → `Conflict` → (`ResourceDeploymentFailure` → the resource's own error).
//!
//! Deployments are records in the state dir (`deployments/{rg}/{name}.json`, written atomically
//! at every step), so they survive the daemon; one that was running when the daemon stopped is
//! marked Failed at the next start (its resources keep whatever state they reached).

pub mod engine;
pub mod template;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::storage::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("Deployment template validation failed: {0}")]
    InvalidTemplate(String),
    #[error("the deployment '{0}' is still running; wait for it to finish before changing or deleting it")]
    Active(String),
    #[error("cannot store the deployment record at {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One resource's step in a deployment, as `deployments/{name}/operations` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation_id: String,
    pub resource_id: String,
    pub resource_type: String,
    pub resource_name: String,
    /// Waiting, Running, Succeeded, Failed, Skipped
    pub state: String,
    pub status_code: Option<String>,
    /// The resource's own error, as its provider reported it.
    pub error: Option<Value>,
    pub started: Option<String>,
    pub ended: Option<String>,
}

/// A deployment record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub name: String,
    pub resource_group: String,
    pub correlation_id: String,
    /// The async operation's id (`operationStatuses/{id}`).
    pub operation: String,
    /// Accepted, Running, Succeeded, Failed
    pub state: String,
    pub mode: String,
    pub template_hash: String,
    /// The caller's parameters with securestring values replaced by nothing (never stored).
    pub parameters: Value,
    pub started: String,
    pub ended: Option<String>,
    pub operations: Vec<Operation>,
    pub error: Option<Value>,
}

impl Deployment {
    pub fn terminal(&self) -> bool {
        matches!(self.state.as_str(), "Succeeded" | "Failed" | "Canceled")
    }

    /// The cloud's error for a deployment whose resources failed.
    pub fn failure(&self) -> Option<Value> {
        let details: Vec<Value> = self
            .operations
            .iter()
            .filter(|o| o.state == "Failed")
            .map(|o| {
                let rp = o.error.clone().unwrap_or_else(|| json!({"code": "Unknown", "message": "the resource failed without an error"}));
                if o.status_code.as_deref() == Some("OK") {
                    // The write was accepted and then the resource failed: ARM wraps it.
                    let inner = json!({
                        "status": "Failed",
                        "error": {
                            "code": "ResourceDeploymentFailure",
                            "message": "The resource operation completed with terminal provisioning state 'Failed'.",
                            "details": [rp],
                        }
                    });
                    json!({
                        "code": "Conflict",
                        "message": serde_json::to_string_pretty(&inner).unwrap_or_default().replace('\n', "\r\n"),
                    })
                } else {
                    rp
                }
            })
            .collect();
        if details.is_empty() {
            return None;
        }
        Some(json!({
            "code": "DeploymentFailed",
            "message": "At least one resource deployment operation failed. Please list deployment operations for details. Please see https://aka.ms/DeployOperations for usage details.",
            "details": details,
        }))
    }
}

/// Every deployment of the node, in memory and on disk.
pub struct Deployments {
    dir: PathBuf,
    all: Mutex<HashMap<(String, String), Deployment>>,
}

fn key(rg: &str, name: &str) -> (String, String) {
    (rg.to_lowercase(), name.to_lowercase())
}

impl Deployments {
    /// Loads the records under `dir`; running ones are marked failed (the daemon stopped).
    pub fn load(dir: &Path) -> Deployments {
        let mut all = HashMap::new();
        for rg in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(rg.path()).into_iter().flatten().flatten() {
                let p = f.path();
                if p.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Ok(mut d) = std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| {
                    serde_json::from_slice::<Deployment>(&b).map_err(|e| e.to_string())
                }) else {
                    tracing::warn!(path = %p.display(), "unreadable deployment record; ignored");
                    continue;
                };
                if !d.terminal() {
                    for o in &mut d.operations {
                        if o.state == "Running" || o.state == "Waiting" {
                            o.state = "Failed".into();
                            o.error = Some(
                                json!({"code": "DeploymentInterrupted", "message": "vmnode stopped while this resource was being deployed; look at the resource itself for its state"}),
                            );
                            o.status_code.get_or_insert_with(|| "OK".into());
                        }
                    }
                    d.state = "Failed".into();
                    d.ended = Some(crate::report::time_now());
                    d.error = d.failure();
                    let _ = write(&p, &d);
                }
                all.insert(key(&d.resource_group, &d.name), d);
            }
        }
        Deployments {
            dir: dir.to_path_buf(),
            all: Mutex::new(all),
        }
    }

    fn path(&self, rg: &str, name: &str) -> PathBuf {
        self.dir
            .join(rg.to_lowercase())
            .join(format!("{}.json", name.to_lowercase()))
    }

    pub fn get(&self, rg: &str, name: &str) -> Option<Deployment> {
        self.lock().get(&key(rg, name)).cloned()
    }

    pub fn list(&self, rg: &str) -> Vec<Deployment> {
        let mut v: Vec<Deployment> = self
            .lock()
            .values()
            .filter(|d| d.resource_group.eq_ignore_ascii_case(rg))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.started.cmp(&b.started));
        v
    }

    pub fn by_operation(&self, op: &str) -> Option<Deployment> {
        self.lock().values().find(|d| d.operation == op).cloned()
    }

    /// Stores a new deployment unless one of that name is still running.
    pub fn begin(&self, d: Deployment) -> Result<(), DeployError> {
        let mut all = self.lock();
        if let Some(old) = all.get(&key(&d.resource_group, &d.name)) {
            if !old.terminal() {
                return Err(DeployError::Active(d.name.clone()));
            }
        }
        let path = self.path(&d.resource_group, &d.name);
        write(&path, &d)?;
        all.insert(key(&d.resource_group, &d.name), d);
        Ok(())
    }

    /// Applies `f` to the record and stores it.
    pub fn update(&self, rg: &str, name: &str, f: impl FnOnce(&mut Deployment)) {
        let mut all = self.lock();
        if let Some(d) = all.get_mut(&key(rg, name)) {
            f(d);
            if let Err(e) = write(&self.path(rg, name), d) {
                tracing::error!(error = %crate::report::chain(&e), "deployment record");
            }
        }
    }

    pub fn remove(&self, rg: &str, name: &str) -> Result<bool, DeployError> {
        let mut all = self.lock();
        match all.get(&key(rg, name)) {
            None => return Ok(false),
            Some(d) if !d.terminal() => return Err(DeployError::Active(d.name.clone())),
            Some(_) => {}
        }
        let path = self.path(rg, name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DeployError::Store { path, source }),
        }
        all.remove(&key(rg, name));
        Ok(true)
    }

    /// Forgets the deployments of a deleted resource group.
    pub fn drop_group(&self, rg: &str) {
        self.lock()
            .retain(|(g, _), d| g != &rg.to_lowercase() || !d.terminal());
        let _ = std::fs::remove_dir_all(self.dir.join(rg.to_lowercase()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Deployment>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write(path: &Path, d: &Deployment) -> Result<(), DeployError> {
    let bytes = serde_json::to_vec_pretty(d).unwrap_or_default();
    fsutil::write_atomic(path, &bytes, 0o600).map_err(|source| DeployError::Store {
        path: path.to_path_buf(),
        source,
    })
}
