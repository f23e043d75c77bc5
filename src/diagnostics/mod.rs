//! Boot diagnostics store. Like the cloud, each VM's diagnostics live in a container
//! `bootdiagnostics-{first 9 chars of the name}-{vmId}`; the serial console is written there by
//! QEMU itself as `{vm}.{vmId}.serialconsole.log`, so capture does not depend on the daemon.

use std::path::{Path, PathBuf};

pub mod boots;
pub mod recorder;
pub mod screen_text;
pub mod screenshot;
pub mod serial;
pub mod verdict;

use crate::config::Paths;

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

pub fn container_dir(paths: &Paths, vm: &str, vm_id: &str) -> PathBuf {
    paths.diagnostics().join(container_name(vm, vm_id))
}

pub fn serial_log_path(container: &Path, vm: &str, vm_id: &str) -> PathBuf {
    container.join(format!("{vm}.{vm_id}.serialconsole.log"))
}

/// The serial log as text (invalid UTF-8 replaced), or empty if nothing was written yet.
pub fn read_serial(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn container_names_follow_the_cloud() {
        let n = super::container_name("My_Long-VM-Name", "abc");
        assert_eq!(n, "bootdiagnostics-mylongvmn-abc");
    }
}
