//! The store's small JSON files (metadata): written so that a daemon crash leaves the old text
//! or the new, read as absent when missing.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Makes `dir` (and its parents) unless it is there. The look comes first because `mkdir` of an
/// existing directory still takes its parent's lock, and waits behind any rename in it.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
}

/// Writes JSON. A new file is made via temp + rename; an existing one is overwritten in place
/// by a single `pwrite`, padded with spaces to its old length (JSON allows trailing
/// whitespace), so a crash of the daemon leaves either the old or the new text, and no rename
/// makes ext4 flush the file on every lease operation. Neither survives power loss without an
/// fsync; leases need to survive a daemon restart.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut body = serde_json::to_vec(v).map_err(io::Error::other)?;
    if let Ok(f) = fs::OpenOptions::new().write(true).open(path) {
        let old = f.metadata()?.len() as usize;
        if body.len() < old {
            body.resize(old, b' ');
        }
        return f.write_all_at(&body, 0);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("meta")
    ));
    fs::write(&tmp, &body)?;
    fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
