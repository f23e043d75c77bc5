//! Last closes off the request path. Replacing a blob (a rename over its file) or deleting it
//! frees the old file's disk blocks at its last close, and on a filesystem mounted with
//! `discard` that free waits for the device (`ext4_free_blocks → blkdev_issue_discard`), inside
//! the request and with the directory locked. So a writer opens the old file first
//! ([`hold`]), renames or unlinks it, and hands the open file to one background thread
//! ([`Reaper::release`]), whose close does the freeing.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

#[derive(Debug)]
enum Msg {
    Close(File),
    #[cfg(test)]
    Flush(Sender<()>),
}

/// The reaper of one store: its thread starts with the first file handed to it and ends when
/// the store is dropped.
#[derive(Debug, Default)]
pub struct Reaper {
    tx: OnceLock<Sender<Msg>>,
}

impl Reaper {
    fn queue(&self) -> &Sender<Msg> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Msg>();
            let spawned = std::thread::Builder::new()
                .name("blob-reaper".into())
                .spawn(move || {
                    for m in rx {
                        match m {
                            Msg::Close(f) => drop(f),
                            #[cfg(test)]
                            Msg::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                // Without the thread, the send fails and the file is closed where it is.
                tracing::warn!(error = %e, "cannot start the blob reaper thread; old files are closed on the request path");
            }
            tx
        })
    }

    /// Closes `file` on the reaper thread (or here, if that thread is gone).
    pub fn release(&self, file: Option<File>) {
        if let Some(f) = file {
            if let Err(mpsc::SendError(Msg::Close(f))) = self.queue().send(Msg::Close(f)) {
                drop(f);
            }
        }
    }

    /// Waits until every file released before the call is closed.
    #[cfg(test)]
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.queue().send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The file at `path`, opened so that its last close can happen later; `None` if there is none.
pub fn hold(path: &Path) -> Option<File> {
    File::open(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this process has `path` open (a deleted file shows as "path (deleted)").
    fn open_here(path: &Path) -> bool {
        let want = format!("{} (deleted)", path.display());
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == want))
    }

    #[test]
    fn a_replaced_file_stays_open_until_the_reaper_closes_it() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("blob"), d.path().join("tmp"));
        std::fs::write(&old, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        let held = hold(&old);
        assert!(held.is_some());
        std::fs::rename(&new, &old).unwrap();
        assert!(open_here(&old), "the old file is held past the rename");
        let reaper = Reaper::default();
        reaper.release(held);
        reaper.flush();
        assert!(!open_here(&old), "and closed by the reaper");
        assert_eq!(std::fs::read(&old).unwrap(), b"new");
        assert!(hold(&d.path().join("none")).is_none());
        reaper.release(None);
    }
}
