//! Screenshots of a VM's display, stored under the cloud's names in its diagnostics container.

use super::{chain, Actor};

impl Actor {
    /// `{container}/{vm}.{vmId}.screenshot.{ext}`, as the cloud names it (`bmp`; `png` beside).
    pub(super) fn shot_path(&self, ext: &str) -> std::path::PathBuf {
        let dir = self
            .rec
            .serial_log
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        dir.join(format!(
            "{}.{}.screenshot.{ext}",
            self.rec.name, self.rec.vm_id
        ))
    }

    /// Captures the display through QMP `screendump` and stores it as BMP and PNG.
    pub(super) async fn screenshot(&self) -> Result<std::path::PathBuf, String> {
        let q = self.qmp.clone().ok_or("the VM is not running")?;
        let ppm = self.run_dir().join("screen.ppm");
        let cmd = qapi::qmp::screendump {
            filename: ppm.display().to_string(),
            device: None,
            head: None,
            format: None,
        };
        q.execute(cmd).await.map_err(|e| chain(&e))?;
        let (bmp, png) = (self.shot_path("bmp"), self.shot_path("png"));
        let (ppm2, bmp2, png2) = (ppm.clone(), bmp.clone(), png.clone());
        let (w, h) = tokio::task::spawn_blocking(move || {
            crate::diagnostics::screenshot::store(&ppm2, &bmp2, &png2)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| chain(&e))?;
        let _ = std::fs::remove_file(&ppm);
        tracing::debug!(w, h, "screenshot");
        Ok(png)
    }
}
