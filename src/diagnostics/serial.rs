//! Serial console capture.
//!
//! QEMU appends the guest's console to a spool file (`.vmnode/serial.spool` in the VM's
//! diagnostics container), so nothing is lost while the daemon is down and the guest never
//! blocks on a slow reader. The VM's actor pumps the spool into one [`BootLog`] per boot and
//! punches holes behind what it has read, so the spool takes no disk space once consumed.
//!
//! A boot's log is bounded: the first [`HEAD`] bytes and the last [`TAIL`] bytes are kept with a
//! marker saying how much was cut between them. It is compacted (head + marker + tail, written
//! to a temp file and renamed) whenever it grows [`SLACK`] past that, so a guest flooding its
//! console costs at most about 3 MiB of disk per boot and a bounded amount of daemon memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const HEAD: u64 = 1 << 20;
pub const TAIL: u64 = 1 << 20;
const SLACK: u64 = 1 << 20;
/// The most one pump reads from the spool before it lets the actor do other work.
const PUMP_MAX: u64 = 4 << 20;
const CHUNK: usize = 64 << 10;

/// What a boot's log holds: `written` bytes of guest output so far, `cut` of them dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogState {
    pub written: u64,
    pub cut: u64,
}

impl LogState {
    /// The length the log file has when it holds exactly this state.
    pub fn file_len(&self) -> u64 {
        if self.cut == 0 {
            self.written
        } else {
            self.written - self.cut + marker_len()
        }
    }
}

/// The marker left where output was cut. Fixed width, so a reader can skip it.
pub fn marker(cut: u64) -> String {
    format!("\n[vmnode: {cut:>20} bytes of serial output cut here; the first and last MiB of this boot are kept]\n")
}

pub fn marker_len() -> u64 {
    marker(0).len() as u64
}

/// One boot's bounded serial log.
pub struct BootLog {
    path: PathBuf,
    pub state: LogState,
}

impl BootLog {
    pub fn open(path: PathBuf, state: LogState) -> BootLog {
        BootLog { path, state }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the file that follow the marker (the kept tail), when something was cut.
    fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(data)?;
        self.state.written += data.len() as u64;
        let len = f.metadata()?.len();
        if len > HEAD + marker_len() + TAIL + SLACK {
            drop(f);
            self.compact(len)?;
        }
        Ok(())
    }

    /// Rewrites the log as head + marker + the last [`TAIL`] bytes.
    fn compact(&mut self, len: u64) -> io::Result<()> {
        let src = File::open(&self.path)?;
        let mut head = vec![0u8; HEAD as usize];
        src.read_exact_at(&mut head, 0)?;
        let mut tail = vec![0u8; TAIL as usize];
        src.read_exact_at(&mut tail, len - TAIL)?;
        let kept_before = if self.state.cut > 0 {
            len - HEAD - marker_len()
        } else {
            len - HEAD
        };
        self.state.cut += kept_before - TAIL;
        let tmp = self.path.with_extension("log.tmp");
        let written = File::create(&tmp)
            .and_then(|mut out| {
                out.write_all(&head)?;
                out.write_all(marker(self.state.cut).as_bytes())?;
                out.write_all(&tail)
            })
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            // A full disk fails the write: no temp file is left behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Up to `max` bytes of guest output from byte `cursor` of this boot's output (absolute,
    /// counting cut bytes), and the cursor after them. A cursor inside the cut part resumes at
    /// the kept tail (the text then starts with the marker).
    pub fn read_from(&self, cursor: u64, max: u64) -> io::Result<(Vec<u8>, u64)> {
        let st = self.state;
        let cursor = cursor.min(st.written);
        let Ok(f) = File::open(&self.path) else {
            return Ok((Vec::new(), cursor));
        };
        let len = f.metadata()?.len();
        // Where `cursor` is in the file: the marker stands for the cut part.
        let file_off = if st.cut == 0 || cursor < HEAD {
            cursor
        } else if cursor < HEAD + st.cut {
            HEAD
        } else {
            HEAD + marker_len() + (cursor - HEAD - st.cut)
        };
        let end = len.min(file_off + max).max(file_off);
        let mut buf = vec![0u8; (end - file_off) as usize];
        f.read_exact_at(&mut buf, file_off)?;
        Ok((buf, self.abs_of(end)))
    }

    /// The output offset of a file offset (inside the marker: where the kept tail starts).
    fn abs_of(&self, off: u64) -> u64 {
        let cut = self.state.cut;
        if cut == 0 || off <= HEAD {
            off
        } else if off < HEAD + marker_len() {
            HEAD + cut
        } else {
            HEAD + cut + (off - HEAD - marker_len())
        }
    }

    /// The last `max` bytes of output, and the cursor at the end.
    pub fn tail(&self, max: u64) -> io::Result<(Vec<u8>, u64)> {
        let len = self.file_len();
        let from_file = len.saturating_sub(max);
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(_) => return Ok((Vec::new(), self.state.written)),
        };
        let mut buf = vec![0u8; (len - from_file) as usize];
        f.read_exact_at(&mut buf, from_file)?;
        Ok((buf, self.state.written))
    }
}

/// The spool QEMU appends to, and how far it has been read.
pub struct Spool {
    pub path: PathBuf,
    pub cursor: u64,
}

impl Spool {
    /// Hands what QEMU wrote since the last pump (up to byte `upto` of the spool, if given)
    /// to `sink`, in chunks. Returns the bytes moved.
    pub fn pump(
        &mut self,
        upto: Option<u64>,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        // Writable: punching holes needs it.
        let mut f = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.cursor {
            // A new spool (QEMU restarted without us seeing it): read it from the start.
            self.cursor = 0;
        }
        let end = upto.unwrap_or(len).min(len).min(self.cursor + PUMP_MAX);
        if end <= self.cursor {
            return Ok(0);
        }
        f.seek(SeekFrom::Start(self.cursor))?;
        let mut left = end - self.cursor;
        let mut buf = vec![0u8; CHUNK];
        let mut moved = 0;
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            sink(&buf[..n])?;
            left -= n as u64;
            moved += n as u64;
        }
        self.cursor += moved;
        self.release(&f);
        Ok(moved)
    }

    /// Frees the disk blocks of what was read (the file keeps its length; QEMU appends).
    fn release(&self, f: &File) {
        let upto = self.cursor & !0xfff;
        if upto == 0 {
            return;
        }
        use std::os::fd::AsRawFd;
        let r = nix::fcntl::fallocate(
            f.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            upto as i64,
        );
        if let Err(e) = r {
            tracing::debug!(error = %e, "punching the serial spool");
        }
    }
}

/// Reads a whole small file as lossy text.
#[cfg(test)]
fn read_text(path: &Path) -> String {
    let mut s = Vec::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_end(&mut s));
    String::from_utf8_lossy(&s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path) -> BootLog {
        BootLog::open(dir.join("boot.log"), LogState::default())
    }

    #[test]
    fn small_logs_are_kept_whole_and_read_by_cursor() {
        let d = tempfile::tempdir().unwrap();
        let mut l = log_in(d.path());
        l.append(b"hello ").unwrap();
        l.append(b"world\n").unwrap();
        assert_eq!(read_text(l.path()), "hello world\n");
        let (b, c) = l.read_from(0, 5).unwrap();
        assert_eq!((&b[..], c), (&b"hello"[..], 5));
        let (b, c) = l.read_from(c, 100).unwrap();
        assert_eq!((&b[..], c), (&b" world\n"[..], 12));
        let (b, c) = l.read_from(c, 100).unwrap();
        assert!(b.is_empty());
        assert_eq!(c, 12);
    }

    #[test]
    fn a_flood_keeps_the_first_and_last_mib_with_a_marker() {
        let d = tempfile::tempdir().unwrap();
        let mut l = log_in(d.path());
        // 10 MiB of numbered lines, in odd-sized writes.
        let mut all = Vec::new();
        let mut i = 0u64;
        while all.len() < 10 << 20 {
            all.extend_from_slice(format!("line {i:08}\n").as_bytes());
            i += 1;
        }
        for chunk in all.chunks(7777) {
            l.append(chunk).unwrap();
        }
        let file = std::fs::read(l.path()).unwrap();
        let bound = HEAD + marker_len() + TAIL + SLACK;
        assert!(file.len() as u64 <= bound, "{} > {bound}", file.len());
        assert_eq!(l.state.written, all.len() as u64);
        assert_eq!(&file[..HEAD as usize], &all[..HEAD as usize]);
        let kept_tail = file.len() as u64 - HEAD - marker_len();
        assert!(kept_tail >= TAIL);
        assert_eq!(
            &file[file.len() - kept_tail as usize..],
            &all[all.len() - kept_tail as usize..]
        );
        let m = String::from_utf8_lossy(&file[HEAD as usize..(HEAD + marker_len()) as usize])
            .into_owned();
        assert_eq!(m, marker(l.state.cut));
        assert_eq!(l.state.cut + HEAD + kept_tail, all.len() as u64);

        // Cursor reads: in the head, in the cut part (→ marker + tail), in the tail.
        let (b, c) = l.read_from(10, 20).unwrap();
        assert_eq!(&b[..], &all[10..30]);
        assert_eq!(c, 30);
        let (b, c) = l.read_from(HEAD + 5, marker_len() + 10).unwrap();
        assert!(String::from_utf8_lossy(&b).contains("bytes of serial output cut here"));
        let tail_start = HEAD + l.state.cut;
        assert_eq!(c, tail_start + 10);
        assert_eq!(
            &b[marker_len() as usize..],
            &all[tail_start as usize..][..10]
        );
        let (b, c) = l.read_from(all.len() as u64 - 4, 100).unwrap();
        assert_eq!(&b[..], &all[all.len() - 4..]);
        assert_eq!(c, all.len() as u64);
    }

    #[test]
    fn the_spool_is_pumped_incrementally_and_its_blocks_freed() {
        let d = tempfile::tempdir().unwrap();
        let spool_path = d.path().join("spool");
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spool_path)
            .unwrap();
        let mut spool = Spool {
            path: spool_path.clone(),
            cursor: 0,
        };
        let mut l = log_in(d.path());
        w.write_all(&vec![b'a'; 100_000]).unwrap();
        assert_eq!(spool.pump(None, |d| l.append(d)).unwrap(), 100_000);
        w.write_all(b"boot two").unwrap();
        // Up to a boundary only: the rest belongs to the next boot.
        assert_eq!(spool.pump(Some(100_004), |d| l.append(d)).unwrap(), 4);
        let mut l2 = BootLog::open(d.path().join("boot2.log"), LogState::default());
        assert_eq!(spool.pump(None, |d| l2.append(d)).unwrap(), 4);
        assert_eq!(read_text(l2.path()), " two");
        assert_eq!(l.state.written, 100_004);
        // The consumed part no longer takes disk blocks (QEMU's appends still land at the end).
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&spool_path).unwrap();
        assert_eq!(md.len(), 100_008);
        assert!(md.blocks() * 512 < 100_008, "blocks {}", md.blocks());
    }
}
