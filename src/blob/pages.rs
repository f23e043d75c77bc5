//! The page map: which 512-byte pages of a page blob hold data.
//!
//! A [`RangeSet`] keeps disjoint, non-adjacent half-open byte ranges `[start, end)` in a
//! `BTreeMap` keyed by start, so a disk written in a few long runs costs a few entries however
//! big it is. Put Page inserts, Clear Page removes, Get Page Ranges reads a window of it.
//! Filesystem holes cannot stand in for it: blocks are 4 KiB, pages are 512 bytes.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The page size of a page blob.
pub const PAGE: u64 = 512;

/// Disjoint, merged half-open ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(u64, u64)>", into = "Vec<(u64, u64)>")]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl From<Vec<(u64, u64)>> for RangeSet {
    fn from(v: Vec<(u64, u64)>) -> Self {
        // What we store is already sorted, disjoint and merged: take it as is.
        if v.windows(2).all(|w| w[0].1 < w[1].0) && v.iter().all(|(a, b)| a < b) {
            return RangeSet {
                map: v.into_iter().collect(),
            };
        }
        let mut s = RangeSet::default();
        for (a, b) in v {
            s.insert(a..b);
        }
        s
    }
}

impl From<RangeSet> for Vec<(u64, u64)> {
    fn from(s: RangeSet) -> Self {
        s.map.into_iter().collect()
    }
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds `r`, merging with overlapping or touching ranges.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // A range starting at or before `start` may overlap or touch.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Ranges starting inside [start, end] are swallowed.
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Removes `r`, splitting ranges that straddle its edges.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        if let Some((&s, &e)) = self.map.range(..r.start).next_back() {
            if e > r.start {
                self.map.insert(s, r.start);
                if e > r.end {
                    self.map.insert(r.end, e);
                    return;
                }
            }
        }
        let inside: Vec<(u64, u64)> = self
            .map
            .range(r.start..r.end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            self.map.remove(&s);
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// Drops everything at or past `len` (a page blob shrinking).
    pub fn truncate(&mut self, len: u64) {
        self.remove(len..u64::MAX);
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.map
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| e > offset)
    }

    /// All ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The ranges clipped to `w`, in order.
    pub fn window(&self, w: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if w.start >= w.end {
            return out;
        }
        if let Some((_, &e)) = self.map.range(..w.start).next_back() {
            if e > w.start {
                out.push(w.start..e.min(w.end));
            }
        }
        for (&s, &e) in self.map.range(w.start..w.end) {
            out.push(s..e.min(w.end));
        }
        out
    }

    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut out = self.clone();
        for r in other.iter() {
            out.insert(r);
        }
        out
    }

    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = self.clone();
        for r in other.iter() {
            out.remove(r);
        }
        out
    }

    pub fn intersection(&self, other: &RangeSet) -> RangeSet {
        let mut out = RangeSet::new();
        for r in other.iter() {
            for w in self.window(r) {
                out.insert(w);
            }
        }
        out
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }
}

/// Data extents of a file as the filesystem reports them (`SEEK_DATA`/`SEEK_HOLE`), rounded
/// out to whole pages. This is how writes a guest made through QEMU show up as page ranges.
pub fn file_extents(file: &std::fs::File, len: u64) -> std::io::Result<RangeSet> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out = RangeSet::new();
    let end = i64::try_from(len).map_err(|_| std::io::Error::other("file too large"))?;
    let mut pos: i64 = 0;
    while pos < end {
        // SAFETY: lseek on an open fd; errors come back through the return value.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (a, b) = (data as u64, (hole as u64).min(len));
        if a < b {
            out.insert(a / PAGE * PAGE..b.div_ceil(PAGE) * PAGE);
        }
        pos = hole;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut s = RangeSet::new();
        s.insert(0..512);
        s.insert(1024..2048);
        s.insert(512..1024);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..2048]);
        s.remove(512..1024);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..512, 1024..2048]);
        assert_eq!(s.window(256..1536), vec![256..512, 1024..1536]);
        s.truncate(1536);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..512, 1024..1536]);
        assert!(s.contains(0) && !s.contains(512) && s.contains(1535) && !s.contains(1536));
    }

    #[test]
    fn file_extents_follow_data() {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        let e = file_extents(&f, 64 << 20).unwrap();
        assert!(e.contains(8 << 20) && !e.contains(0) && !e.contains(16 << 20));
    }

    /// The model: one bool per page of a blob of `PAGES` pages.
    const PAGES: u64 = 256;

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, u64),
        Clear(u64, u64),
        Resize(u64),
        Window(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let span = (0..PAGES, 1..=32u64);
        prop_oneof![
            4 => span.clone().prop_map(|(a, n)| Op::Write(a, n)),
            3 => span.clone().prop_map(|(a, n)| Op::Clear(a, n)),
            1 => (1..=PAGES).prop_map(Op::Resize),
            2 => span.prop_map(|(a, n)| Op::Window(a, n)),
        ]
    }

    fn ranges_of(bits: &[bool]) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            if !*b {
                continue;
            }
            let (a, e) = (i as u64 * PAGE, (i as u64 + 1) * PAGE);
            match out.last_mut() {
                Some(r) if r.end == a => r.end = e,
                _ => out.push(a..e),
            }
        }
        out
    }

    proptest! {
        // 200 cases × up to 600 operations: well over 10^5 operations against the bitmap.
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn page_map_matches_a_bitmap(ops in proptest::collection::vec(op(), 500..600)) {
            let mut model = vec![false; PAGES as usize];
            let mut size = PAGES;
            let mut set = RangeSet::new();
            for op in ops {
                match op {
                    Op::Write(a, n) | Op::Clear(a, n) => {
                        let (a, e) = (a.min(size), (a + n).min(size));
                        let write = matches!(op, Op::Write(..));
                        for b in &mut model[a as usize..e as usize] {
                            *b = write;
                        }
                        if write {
                            set.insert(a * PAGE..e * PAGE);
                        } else {
                            set.remove(a * PAGE..e * PAGE);
                        }
                    }
                    Op::Resize(n) => {
                        for b in &mut model[n as usize..] {
                            *b = false;
                        }
                        size = n;
                        set.truncate(n * PAGE);
                    }
                    Op::Window(a, n) => {
                        let (a, e) = (a.min(size), (a + n).min(size));
                        let mut sub = vec![false; PAGES as usize];
                        sub[a as usize..e as usize].copy_from_slice(&model[a as usize..e as usize]);
                        prop_assert_eq!(set.window(a * PAGE..e * PAGE), ranges_of(&sub));
                    }
                }
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), ranges_of(&model));
            }
            prop_assert_eq!(set.bytes(), model.iter().filter(|b| **b).count() as u64 * PAGE);
        }
    }
}
