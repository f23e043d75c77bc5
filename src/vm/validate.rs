//! The cloud's rules for names, and whether a size fits this host: checked before anything of a
//! VM is made.

use super::{sizes, VmError};

/// The host's cores and memory (MiB).
fn host_capacity() -> (u32, u64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    (cores, mem_kib / 1024)
}

/// A VM must fit the host: no more vCPUs than it has cores, no more memory than it has.
/// (Several VMs may share them, as guests under TCG touch little of their memory.)
pub fn capacity(size: &sizes::VmSize) -> Result<(), VmError> {
    let (cores, mem) = host_capacity();
    if size.number_of_cores > cores || size.memory_in_mb > mem {
        return Err(VmError::Capacity(format!(
            "Allocation failed: size {} needs {} vCPUs and {} MiB, but this host has {cores} cores and {mem} MiB. Pick a smaller size (`vmnode vm list-sizes`).",
            size.name, size.number_of_cores, size.memory_in_mb
        )));
    }
    Ok(())
}

/// A disk's caching: None, ReadOnly or ReadWrite, in any case; `field` names it in the error.
pub fn validate_caching(field: &str, caching: &str) -> Result<(), VmError> {
    if !matches!(
        caching.to_ascii_lowercase().as_str(),
        "none" | "readonly" | "readwrite"
    ) {
        return Err(VmError::InvalidParameter(format!(
            "{field} '{caching}' is invalid: use None, ReadOnly or ReadWrite."
        )));
    }
    Ok(())
}

/// Cloud rules for a Linux VM resource name.
pub fn validate_vm_name(name: &str) -> Result<(), VmError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok = !name.is_empty()
        && name.len() <= 64
        && ok_chars
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.ends_with('.')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidParameter(format!(
            "The VM name '{name}' is invalid: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit and not ending with '.' or '-'."
        )))
    }
}

/// Cloud rules for a Linux computer name (the guest's hostname).
pub fn validate_computer_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidField {
            target: "computerName".into(),
            message: format!(
                "The computer name '{name}' is invalid: a Linux host name is 1-64 letters, digits or '-', not all digits, and does not start or end with '-'. Pass a valid --computer-name."
            ),
        })
    }
}

/// Cloud rules for a resource group name.
pub fn validate_rg_name(name: &str) -> Result<(), VmError> {
    crate::groups::validate_name(name).map_err(|e| VmError::InvalidParameter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_follow_the_cloud_rules() {
        for ok in ["vm1", "My-VM_2", "a", "web.01"] {
            assert!(validate_vm_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-vm",
            "_vm",
            "vm-",
            "vm.",
            "vm 1",
            "vm/1",
            "vm,1",
            &"x".repeat(65),
        ] {
            assert!(validate_vm_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn computer_and_group_names() {
        assert!(validate_computer_name("vm-1").is_ok());
        assert!(validate_computer_name("vm_1").is_err());
        assert!(validate_computer_name("1234").is_err());
        assert!(validate_rg_name("rg(1)-x_y.z").is_ok());
        assert!(validate_rg_name("rg.").is_err());
        assert!(validate_rg_name("r g").is_err());
    }
}
