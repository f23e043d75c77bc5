//! The per-VM transcript of the QMP conversation: every line sent and received, timestamped,
//! appended best effort.

use super::*;

/// Append-only, timestamped log of the QMP conversation (best effort).
pub(super) struct Transcript {
    path: PathBuf,
    file: Mutex<File>,
    warned: AtomicBool,
}

impl Transcript {
    pub(super) fn open(path: PathBuf) -> Option<Transcript> {
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => Some(Transcript {
                path,
                file: Mutex::new(file),
                warned: AtomicBool::new(false),
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open QMP transcript");
                None
            }
        }
    }

    /// `prefix` is `->` (sent), `<-` (received) or `--` (note).
    /// These are small appends to a local file, so blocking here is fine.
    pub(super) fn record(&self, prefix: &str, line: &str) {
        let entry = format!("{} {prefix} {line}\n", format_timestamp(SystemTime::now()));
        let result = lock(&self.file).write_all(entry.as_bytes());
        if let Err(e) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write QMP transcript");
            }
        }
    }
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2024-01-01T00:00:00.000000Z`.
pub(super) fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
