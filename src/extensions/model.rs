//! An extension as stored (`ExtensionRecord`), what one run left behind (`RunResult`), and the
//! extension as ARM shows it (`to_arm`). The sealed `protectedSettings` live in the record but
//! nothing here ever renders them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use crate::vm::model::{ErrorBody, ProvisioningState};

/// The handlers this node runs. Both run a shell command in a Linux guest.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Handler {
    /// `Microsoft.Azure.Extensions/CustomScript` (the Linux one, 2.x).
    LinuxCustomScript,
    /// `Microsoft.Compute/CustomScriptExtension` (the Windows one; its command runs in `/bin/sh`
    /// here because vmnode's guests are Linux, and PowerShell commands are refused).
    WindowsCustomScript,
}

impl Handler {
    pub fn of(publisher: &str, ext_type: &str) -> Option<Handler> {
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if is(publisher, "Microsoft.Azure.Extensions") && is(ext_type, "CustomScript") {
            Some(Handler::LinuxCustomScript)
        } else if is(publisher, "Microsoft.Compute") && is(ext_type, "CustomScriptExtension") {
            Some(Handler::WindowsCustomScript)
        } else {
            None
        }
    }

    /// Where the cloud's agent puts the files of configuration `seq`.
    pub fn download_dir(self, seq: u32) -> String {
        match self {
            Handler::LinuxCustomScript => format!("/var/lib/waagent/custom-script/download/{seq}"),
            // The Windows handler's `C:\Packages\Plugins\...\Downloads\{seq}`, on a Linux guest.
            Handler::WindowsCustomScript => {
                format!("/var/lib/waagent/Microsoft.Compute.CustomScriptExtension/Downloads/{seq}")
            }
        }
    }

    pub fn troubleshoot_link(self) -> &'static str {
        match self {
            Handler::LinuxCustomScript => "https://aka.ms/VMExtensionCSELinuxTroubleshoot",
            Handler::WindowsCustomScript => "https://aka.ms/VMExtensionCSEWindowsTroubleshoot",
        }
    }
}

/// How one run of the handler ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Outcome {
    /// The command ran; `code` is its exit code (`None`: a signal ended it).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        stdout_tail: String,
        stderr_tail: String,
    },
    /// A fileUri could not be fetched (nothing ran in the guest).
    DownloadFailed {
        /// The URL with its SAS signature redacted.
        url: String,
        /// `container/blob` for a blob URL, else the URL's path.
        blob: String,
        status: Option<u16>,
        code: String,
        message: String,
    },
    /// The guest could not be reached or the command did not finish in time.
    AgentFailed { message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunResult {
    pub seq: u32,
    pub start: String,
    pub end: String,
    pub outcome: Outcome,
}

impl RunResult {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Exited { code: Some(0), .. })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtensionRecord {
    pub rg: String,
    pub vm: String,
    /// The VM this extension belongs to (a VM made again under the same name is another VM).
    pub vm_id: String,
    pub name: String,
    pub location: String,
    pub publisher: String,
    pub ext_type: String,
    pub handler: Handler,
    pub type_handler_version: String,
    pub auto_upgrade_minor_version: bool,
    /// Public settings, as given.
    pub settings: Map<String, Value>,
    /// `protectedSettings`, sealed with the node's key (see `secret.rs`); never rendered.
    pub protected_sealed: Option<String>,
    pub force_update_tag: Option<String>,
    pub tags: Map<String, Value>,
    pub provisioning_state: ProvisioningState,
    /// The configuration's sequence number: one more for every configuration that runs.
    pub seq: u32,
    pub error: Option<ErrorBody>,
    pub last_run: Option<RunResult>,
    /// The handler's log in the VM's diagnostics container (blob name).
    pub handler_log_blob: String,
}

pub fn ext_key(rg: &str, vm: &str, name: &str) -> String {
    format!(
        "{}/{}/{}",
        rg.to_lowercase(),
        vm.to_lowercase(),
        name.to_lowercase()
    )
}

impl ExtensionRecord {
    pub fn key(&self) -> String {
        ext_key(&self.rg, &self.vm, &self.name)
    }
}

pub fn ext_arm_id(sub: &str, rg: &str, vm: &str, name: &str) -> String {
    format!(
        "{}/extensions/{name}",
        crate::vm::model::vm_arm_id(sub, rg, vm)
    )
}

/// The extension as `GET .../extensions/{name}` returns it; `view` is its instance view when
/// asked for (`$expand=instanceView`). On failure `properties.error` carries the error a
/// deployment nests (vmnode's addition; the cloud shows it only in the operation).
pub fn to_arm(sub: &str, r: &ExtensionRecord, view: Option<Value>) -> Value {
    let mut props = json!({
        "publisher": r.publisher,
        "type": r.ext_type,
        "typeHandlerVersion": r.type_handler_version,
        "autoUpgradeMinorVersion": r.auto_upgrade_minor_version,
        "settings": r.settings,
        "provisioningState": crate::vm::model::provisioning_str(r.provisioning_state),
    });
    if let Some(t) = &r.force_update_tag {
        props["forceUpdateTag"] = json!(t);
    }
    if let Some(e) = &r.error {
        props["error"] = json!(e);
    }
    if let Some(v) = view {
        props["instanceView"] = v;
    }
    let mut v = json!({
        "id": ext_arm_id(sub, &r.rg, &r.vm, &r.name),
        "name": r.name,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": r.location,
        "properties": props,
    });
    if !r.tags.is_empty() {
        v["tags"] = json!(r.tags);
    }
    v
}

/// A setting by name, as the handlers read them (case-insensitively).
pub fn setting<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}
