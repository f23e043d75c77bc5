//! Data disks of a VM: empty sparse page blobs under the VM's lease, attached at boot or
//! hot-plugged into a running guest (QMP blockdev-add + device_add on a PCIe root port) and
//! hot-unplugged (device_del until the guest lets go). QEMU opens no path (qemu/jail.rs): a
//! hot-plugged disk's file goes to it over the QMP socket (`add-fd` into the LUN's fd set,
//! [`argv::data_disk_set`]), and `blockdev-add` opens `/dev/fdset/N`; a detach drops the set.

use std::os::fd::AsFd;
use std::time::Duration;

use super::{chain, Actor, ActorError};
use crate::qemu::argv;
use crate::vm::lifecycle::Refusal;
use crate::vm::model::{DataDisk, PowerState, ProvisioningState};

pub(super) fn spec_of(d: &DataDisk) -> argv::DataDiskSpec {
    argv::DataDiskSpec {
        lun: d.lun,
        path: d.path.clone(),
        caching: d.caching.clone(),
    }
}

impl Actor {
    /// Makes the disk's file (sparse, its full size) if it is missing and puts it under the
    /// VM's lease. Returns whether the file was made here; on failure nothing made is left.
    pub(super) fn prepare_data_disk(&self, d: &DataDisk) -> Result<bool, ActorError> {
        let created = !d.path.exists();
        if created {
            let made = d
                .path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|_| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&d.path)
                })
                .and_then(|f| f.set_len(d.size_gb << 30));
            made.map_err(|e| {
                ActorError::io(format!("creating data disk {}", d.path.display()), e)
            })?;
        }
        if let Err(e) = crate::blob::acquire_disk_lease(&self.node.blobs, &d.path, &self.rec.vm_id)
        {
            if created {
                let _ = std::fs::remove_file(&d.path);
            }
            return Err(ActorError::blob(format!("leasing data disk {}", d.name), e));
        }
        Ok(created)
    }

    /// Attaches and detaches data disks so that the VM has exactly `wanted`. A running guest
    /// gets them hot-plugged (QMP blockdev-add + device_add on a PCIe root port) and unplugged
    /// (device_del, waiting for the guest to let go). Detached blobs stay in the store.
    pub(super) async fn set_data_disks(&mut self, wanted: Vec<DataDisk>) -> Result<(), ActorError> {
        if matches!(
            self.rec.provisioning_state,
            ProvisioningState::Creating | ProvisioningState::Deleting
        ) {
            return Err(ActorError::Refused(Refusal {
                op: "dataDisks",
                why: "the VM is being created or deleted".into(),
            }));
        }
        let running = self.rec.power == PowerState::Running && self.qmp.is_some();
        let store = self.node.blobs.clone();
        for d in self
            .rec
            .data_disks
            .clone()
            .into_iter()
            .filter(|d| !wanted.contains(d))
        {
            if running {
                self.unplug(&d).await?;
                crate::failpoint::crash_point("detach.unplugged");
            }
            let _ = crate::blob::release_disk_lease(&store, &d.path, &self.rec.vm_id);
            crate::failpoint::crash_point("detach.released");
            tracing::info!(lun = d.lun, disk = %d.name, "data disk detached");
            self.rec.data_disks.retain(|x| x != &d);
            self.publish();
        }
        let new: Vec<DataDisk> = wanted
            .into_iter()
            .filter(|d| !self.rec.data_disks.contains(d))
            .collect();
        for d in new {
            let created = self.prepare_data_disk(&d)?;
            crate::failpoint::crash_point("attach.disk_leased");
            // In the record before QEMU gets it: a daemon killed in between finds the disk
            // listed and plugs it when it re-adopts the VM (`plug_missing`); never a disk in
            // QEMU that the record does not list.
            self.rec.data_disks.push(d.clone());
            self.rec.data_disks.sort_by_key(|d| d.lun);
            self.publish();
            crate::failpoint::crash_point("attach.recorded");
            if running {
                if let Err(e) = self.plug(&d).await {
                    self.rec.data_disks.retain(|x| x != &d);
                    self.publish();
                    let _ = crate::blob::release_disk_lease(&store, &d.path, &self.rec.vm_id);
                    if created {
                        let _ = std::fs::remove_file(&d.path);
                    }
                    return Err(e);
                }
                crate::failpoint::crash_point("attach.plugged");
            }
            tracing::info!(lun = d.lun, disk = %d.name, hotplug = running, "data disk attached");
        }
        Ok(())
    }

    /// After a re-adoption: plugs every data disk the record lists that QEMU lacks (an attach
    /// the daemon was killed in, between record and hot-plug).
    pub(super) async fn plug_missing(&mut self) {
        let Some(q) = self.qmp.clone() else { return };
        if self.rec.data_disks.is_empty() {
            return;
        }
        let args = serde_json::json!({ "path": "/machine/peripheral" });
        let have = match q
            .execute_raw(
                "qom-list",
                Some(args),
                crate::qemu::qmp::timeout_for("qom-list"),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot list QEMU's devices");
                return;
            }
        };
        let ids: Vec<&str> = have
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for d in self.rec.data_disks.clone() {
            if ids.contains(&format!("dd{}-dev", d.lun).as_str()) {
                continue;
            }
            match self.plug(&d).await {
                Ok(()) => {
                    tracing::info!(lun = d.lun, disk = %d.name, "data disk the record lists plugged at re-adoption")
                }
                Err(e) => {
                    tracing::error!(lun = d.lun, disk = %d.name, error = %e, "cannot plug a data disk the record lists")
                }
            }
        }
    }

    async fn plug(&self, d: &DataDisk) -> Result<(), ActorError> {
        let q = self
            .qmp
            .clone()
            .ok_or(ActorError::NoMonitor("QMP is not connected"))?;
        let t = Duration::from_secs(30);
        let direct = d.caching.eq_ignore_ascii_case("none");
        let set = argv::data_disk_set(d.lun);
        let f = crate::qemu::jail::open_one(&d.path, crate::qemu::jail::Access::ReadWrite)
            .map_err(|source| ActorError::Jail {
                what: format!("opening data disk {}", d.name),
                source,
            })?;
        q.add_fd(f.as_fd(), set, &format!("dd{}", d.lun))
            .await
            .map_err(|e| ActorError::qmp(format!("handing data disk {} to QEMU", d.name), e))?;
        drop(f);
        let file = serde_json::json!({
            "driver": "file", "node-name": format!("dd{}-file", d.lun),
            "filename": format!("/dev/fdset/{set}"), "discard": "unmap", "cache": { "direct": direct },
        });
        let raw = serde_json::json!({ "driver": "raw", "node-name": format!("dd{}", d.lun), "file": format!("dd{}-file", d.lun) });
        let dev = serde_json::json!({
            "driver": "virtio-blk-pci", "drive": format!("dd{}", d.lun), "id": format!("dd{}-dev", d.lun),
            "serial": format!("lun{}", d.lun), "bus": format!("rp{}", d.lun),
        });
        if let Err(e) = q.execute_raw("blockdev-add", Some(file), t).await {
            q.remove_fd(set).await;
            return Err(ActorError::qmp(format!("plugging data disk {}", d.name), e));
        }
        if let Err(e) = q.execute_raw("blockdev-add", Some(raw), t).await {
            let _ = q
                .execute_raw(
                    "blockdev-del",
                    Some(serde_json::json!({"node-name": format!("dd{}-file", d.lun)})),
                    t,
                )
                .await;
            q.remove_fd(set).await;
            return Err(ActorError::qmp(format!("plugging data disk {}", d.name), e));
        }
        if let Err(e) = q.execute_raw("device_add", Some(dev), t).await {
            for n in [format!("dd{}", d.lun), format!("dd{}-file", d.lun)] {
                let _ = q
                    .execute_raw(
                        "blockdev-del",
                        Some(serde_json::json!({ "node-name": n })),
                        t,
                    )
                    .await;
            }
            q.remove_fd(set).await;
            return Err(ActorError::qmp(format!("plugging data disk {}", d.name), e));
        }
        Ok(())
    }

    async fn unplug(&self, d: &DataDisk) -> Result<(), ActorError> {
        let q = self
            .qmp
            .clone()
            .ok_or(ActorError::NoMonitor("QMP is not connected"))?;
        let id = format!("dd{}-dev", d.lun);
        let mut events = q.events();
        // The guest must release the device (PCIe hot-unplug); that ends in DEVICE_DELETED. A
        // guest that is still booting, or still settling a hot-plug, ignores the request
        // (the attention button within its power-on window): press it again until it answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut deleted = false;
        while !deleted && tokio::time::Instant::now() < deadline {
            if let Err(e) = q
                .execute_raw(
                    "device_del",
                    Some(serde_json::json!({ "id": id })),
                    Duration::from_secs(10),
                )
                .await
            {
                tracing::debug!(error = %chain(&e), "device_del");
            }
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(ev)
                            if ev.name == "DEVICE_DELETED" && ev.data["device"] == id.as_str() =>
                        {
                            return true
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return false,
                    }
                }
            };
            deleted = tokio::time::timeout(Duration::from_secs(6), wait)
                .await
                .unwrap_or(false);
        }
        if !deleted {
            return Err(ActorError::GuestTimeout(format!(
                "the guest did not release data disk LUN {} within 60 s",
                d.lun
            )));
        }
        for n in [format!("dd{}", d.lun), format!("dd{}-file", d.lun)] {
            let _ = q
                .execute_raw(
                    "blockdev-del",
                    Some(serde_json::json!({ "node-name": n })),
                    Duration::from_secs(10),
                )
                .await;
        }
        // QEMU closes the disk's last fd with its set.
        q.remove_fd(argv::data_disk_set(d.lun)).await;
        Ok(())
    }
}
