//! The VM size catalog (`.../locations/{loc}/vmSizes`), with the cloud's published figures.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    pub name: &'static str,
    pub number_of_cores: u32,
    #[serde(rename = "osDiskSizeInMB")]
    pub os_disk_size_in_mb: u64,
    #[serde(rename = "resourceDiskSizeInMB")]
    pub resource_disk_size_in_mb: u64,
    #[serde(rename = "memoryInMB")]
    pub memory_in_mb: u64,
    pub max_data_disk_count: u32,
}

const fn size(name: &'static str, cores: u32, mem: u64, res: u64, disks: u32) -> VmSize {
    VmSize {
        name,
        number_of_cores: cores,
        os_disk_size_in_mb: 1_047_552,
        resource_disk_size_in_mb: res,
        memory_in_mb: mem,
        max_data_disk_count: disks,
    }
}

pub const SIZES: &[VmSize] = &[
    size("Standard_B1s", 1, 1024, 4096, 2),
    size("Standard_B1ms", 1, 2048, 4096, 2),
    size("Standard_B2s", 2, 4096, 8192, 4),
    size("Standard_DS1_v2", 1, 3584, 7168, 2),
    size("Standard_DS2_v2", 2, 7168, 14336, 8),
    size("Standard_D2s_v3", 2, 8192, 16384, 4),
    size("Standard_D4s_v3", 4, 16384, 32768, 8),
    size("Standard_E64s_v3", 64, 524_288, 884_736, 32),
];

/// Sizes are matched case-insensitively, as the cloud does.
pub fn find(name: &str) -> Option<&'static VmSize> {
    SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

pub fn names() -> String {
    SIZES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ds1_v2_has_the_published_figures() {
        let s = super::find("standard_ds1_v2").unwrap();
        assert_eq!(
            (
                s.number_of_cores,
                s.memory_in_mb,
                s.resource_disk_size_in_mb
            ),
            (1, 3584, 7168)
        );
        assert_eq!(
            (s.os_disk_size_in_mb, s.max_data_disk_count),
            (1_047_552, 2)
        );
        assert!(super::find("Standard_Nope").is_none());
    }
}
