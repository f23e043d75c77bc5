//! Boot diagnostics. Like the cloud, each VM's diagnostics live in a blob container
//! `bootdiagnostics-{first 9 chars of the name}-{vmId}` of a storage account (the one the VM's
//! `bootDiagnostics.storageUri` names, else the node's): the latest screenshot as
//! `{vm}.{vmId}.screenshot.bmp` (PNG beside), the current boot's serial log as
//! `{vm}.{vmId}.serialconsole.log`, and vmnode's per-boot logs and screenshot series beside them.
//!
//! | file | role |
//! |---|---|
//! | `serial.rs` | the spool QEMU writes, and one bounded log per boot (first + last MiB) |
//! | `boots.rs` | the boot records and timelines; which console lines mark a step |
//! | `recorder.rs` | one VM's flight recorder: fed by its actor, read by the API |
//! | `verdict.rs` | where a boot stopped, and the evidence (pure) |
//! | `screenshot.rs`, `screen_text.rs` | PPM → BMP + PNG; the screen's text, read with the guest's font |

use std::path::{Path, PathBuf};

pub mod boots;
pub mod recorder;
pub mod screen_text;
pub mod screenshot;
pub mod serial;
pub mod verdict;

/// The container name the cloud uses for a VM's boot diagnostics.
pub fn container_name(vm: &str, vm_id: &str) -> String {
    let short: String = vm
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(9)
        .collect();
    format!("bootdiagnostics-{short}-{vm_id}")
}

/// `{vm}.{vmId}.serialconsole.log`: the cloud's name for the (current boot's) serial log.
pub fn serial_log_name(vm: &str, vm_id: &str) -> String {
    format!("{vm}.{vm_id}.serialconsole.log")
}

/// `{vm}.{vmId}.screenshot.{ext}`: the cloud's name for the latest screenshot (`bmp`; vmnode
/// keeps a `png` beside it).
pub fn screenshot_name(vm: &str, vm_id: &str, ext: &str) -> String {
    format!("{vm}.{vm_id}.screenshot.{ext}")
}

/// The storage account a `bootDiagnostics.storageUri` names: the first path segment of a
/// path-style endpoint (`http://host:port/{account}/`, this node's blob service) or the first
/// label of the cloud's `https://{account}.blob.core.windows.net/`. `None` if it names none.
pub fn account_of_storage_uri(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let name = match host.split_once(".blob.") {
        Some((acct, _)) => acct,
        None => path.split('/').next().unwrap_or(""),
    };
    (!name.is_empty()).then(|| name.to_string())
}

pub fn serial_log_path(container: &Path, vm: &str, vm_id: &str) -> PathBuf {
    container.join(serial_log_name(vm, vm_id))
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_uris_name_their_account() {
        let a = super::account_of_storage_uri;
        assert_eq!(a("http://127.0.0.1:7481/diag1/").as_deref(), Some("diag1"));
        assert_eq!(
            a("https://diag1.blob.core.windows.net/").as_deref(),
            Some("diag1")
        );
        assert_eq!(a("http://127.0.0.1:7481/"), None);
        assert_eq!(a("diag1"), None);
    }

    #[test]
    fn container_names_follow_the_cloud() {
        let n = super::container_name("My_Long-VM-Name", "abc");
        assert_eq!(n, "bootdiagnostics-mylongvmn-abc");
    }
}
