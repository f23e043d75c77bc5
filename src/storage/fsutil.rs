//! Crash-safe file writes: write a temp file, fsync it, rename over the target, fsync the dir.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_replace(path, data, mode, true)
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one, never half
/// of one — without syncing: for files the next write replaces anyway (screenshots).
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_replace(path, data, mode, false)
}

fn write_replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // One temporary file per call: two threads writing one path at once each rename their own
    // (with only the pid, one renamed the other's away and failed with ENOENT).
    let tmp = dir.join(format!(
        ".{}.tmp{}.{:016x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        rand::random::<u64>()
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_path_written_by_many_threads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::thread::scope(|s| {
            for i in 0..16u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::write_atomic(path, &[i; 64], 0o600).unwrap();
                    }
                });
            }
        });
        let data = std::fs::read(&path).unwrap();
        assert!(data.len() == 64 && data.iter().all(|b| *b == data[0]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
    }
}
