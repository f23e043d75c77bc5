use super::*;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::blob::store::HttpProps;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::new(dir.path().join("blobs"));
    s.add_account("acct", &[&crate::blob::new_account_key()])
        .unwrap();
    (dir, s)
}

#[test]
fn a_disk_written_by_a_guest_shows_its_writes() {
    let (_dir, s) = store();
    // The VM actor's clone: a sparse file appears in vhds/ with no metadata.
    let disk = s.root.join("acct/vhds/vm1-osdisk-0.vhd");
    fs::create_dir_all(disk.parent().unwrap()).unwrap();
    let f = File::create(&disk).unwrap();
    f.set_len(64 << 20).unwrap();
    let a = Access::default();
    let ranges = |s: &Store| {
        let (_, p, _) = s
            .page_ranges("acct", "vhds", "vm1-osdisk-0.vhd", None, None, None, &a)
            .unwrap();
        p
    };
    assert!(ranges(&s).is_empty());
    let (m0, _) = s
        .read_meta("acct", "vhds", "vm1-osdisk-0.vhd", None, &a)
        .unwrap();
    assert_eq!((m0.blob_type, m0.size), (BlobType::PageBlob, 64 << 20));
    // The guest writes 8 KiB at 1 MiB, through QEMU (not the API).
    std::thread::sleep(std::time::Duration::from_millis(10));
    f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
    assert_eq!(ranges(&s), vec![(1 << 20)..(1 << 20) + 8192]);
    let (m1, _) = s
        .read_meta("acct", "vhds", "vm1-osdisk-0.vhd", None, &a)
        .unwrap();
    assert!(
        m1.modified_ns > m0.modified_ns,
        "Last-Modified follows guest writes"
    );
    // An API write and a sub-block clear inside the guest's data.
    s.put_pages(
        "acct",
        "vhds",
        "vm1-osdisk-0.vhd",
        0..512,
        Some(&[1u8; 512]),
        &a,
    )
    .unwrap();
    s.put_pages(
        "acct",
        "vhds",
        "vm1-osdisk-0.vhd",
        (1 << 20)..(1 << 20) + 512,
        None,
        &a,
    )
    .unwrap();
    assert_eq!(ranges(&s), vec![0..512, (1 << 20) + 512..(1 << 20) + 8192]);
    // A whole-block clear leaves a hole that a later guest write fills again.
    s.put_pages(
        "acct",
        "vhds",
        "vm1-osdisk-0.vhd",
        (1 << 20) + 4096..(1 << 20) + 8192,
        None,
        &a,
    )
    .unwrap();
    assert_eq!(ranges(&s), vec![0..512, (1 << 20) + 512..(1 << 20) + 4096]);
    let mut g = OpenOptions::new().write(true).open(&disk).unwrap();
    g.seek(SeekFrom::Start((1 << 20) + 4096)).unwrap();
    g.write_all(&[9u8; 4096]).unwrap();
    assert_eq!(ranges(&s), vec![0..512, (1 << 20) + 512..(1 << 20) + 8192]);
}

#[test]
fn diff_against_a_snapshot_sees_guest_writes() {
    let (_dir, s) = store();
    let disk = s.root.join("acct/vhds/d.vhd");
    fs::create_dir_all(disk.parent().unwrap()).unwrap();
    let f = File::create(&disk).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    let a = Access::default();
    let (snap, _) = s.snapshot("acct", "vhds", "d.vhd", None, &a).unwrap();
    f.write_all_at(&[2u8; 512], 8192).unwrap();
    let (_, pages, clears) = s
        .page_ranges("acct", "vhds", "d.vhd", None, Some(&snap), None, &a)
        .unwrap();
    assert_eq!(pages, vec![8192..8192 + 512]);
    assert!(clears.is_empty());
}

/// Put Blob and Put Block List follow the same overwrite rules (one `check_overwrite`), over
/// every blob state × lease id × condition.
#[test]
fn put_blob_and_put_block_list_share_the_overwrite_rules() {
    let (_dir, s) = store();
    fs::create_dir_all(s.root.join("acct/c")).unwrap();
    let holder = "00000000-0000-4000-8000-0000000000aa";
    let other = "00000000-0000-4000-8000-0000000000bb";
    #[derive(Clone, Copy, Debug)]
    enum State {
        Absent,
        Present,
        Leased,
    }
    let setup = |name: &str, st: State| -> Option<String> {
        if matches!(st, State::Absent) {
            return None;
        }
        let m = s
            .put_blob(
                "acct",
                "c",
                name,
                NewBlob::Append,
                HttpProps::default(),
                Default::default(),
                &Access::default(),
            )
            .unwrap();
        if matches!(st, State::Leased) {
            let op = lease::Op::Acquire {
                duration: -1,
                proposed: Some(holder.into()),
            };
            s.lease_blob("acct", "c", name, &op, &Cond::default())
                .unwrap();
        }
        // A lease does not change the ETag.
        Some(crate::blob::store::etag(m.modified_ns))
    };
    let conds = |etag: Option<&str>| -> Vec<(&'static str, Cond)> {
        let e = etag.unwrap_or("\"0x1\"").to_string();
        vec![
            ("none", Cond::default()),
            (
                "if-match current",
                Cond {
                    if_match: Some(e.clone()),
                    ..Cond::default()
                },
            ),
            (
                "if-match stale",
                Cond {
                    if_match: Some("\"0x1\"".into()),
                    ..Cond::default()
                },
            ),
            (
                "if-none-match *",
                Cond {
                    if_none_match: Some("*".into()),
                    ..Cond::default()
                },
            ),
            (
                "if-none-match current",
                Cond {
                    if_none_match: Some(e),
                    ..Cond::default()
                },
            ),
            (
                "if-unmodified-since 0",
                Cond {
                    if_unmodified_since: Some(0),
                    ..Cond::default()
                },
            ),
        ]
    };
    let code = |r: Result<BlobMeta>| r.map(|_| "ok").unwrap_or_else(|e| e.code);
    let mut n = 0;
    for st in [State::Absent, State::Present, State::Leased] {
        for id in [None, Some(holder), Some(other)] {
            for i in 0..6 {
                let (a, b) = (format!("a{n}"), format!("b{n}"));
                n += 1;
                let (ea, eb) = (setup(&a, st), setup(&b, st));
                let (what, ca) = conds(ea.as_deref()).swap_remove(i);
                let (_, cb) = conds(eb.as_deref()).swap_remove(i);
                let access = |cond| Access {
                    lease_id: id.map(String::from),
                    cond,
                };
                let tmp = s.root.join("acct/c/.tmp-put");
                fs::write(&tmp, b"x").unwrap();
                let put = code(s.put_blob(
                    "acct",
                    "c",
                    &a,
                    NewBlob::Block(&tmp),
                    HttpProps::default(),
                    Default::default(),
                    &access(ca),
                ));
                let _ = fs::remove_file(&tmp);
                let list = code(s.put_block_list(
                    "acct",
                    "c",
                    &b,
                    &[],
                    HttpProps::default(),
                    Default::default(),
                    &access(cb),
                ));
                assert_eq!(put, list, "{st:?}, lease id {id:?}, {what}");
                let want = match (st, id, what) {
                    (State::Absent, Some(_), _) => "LeaseNotPresentWithBlobOperation",
                    (
                        State::Absent,
                        None,
                        "if-match current" | "if-match stale" | "if-unmodified-since 0",
                    ) => "ConditionNotMet",
                    (State::Absent, None, _) => "ok",
                    (_, _, "if-none-match *") => "BlobAlreadyExists",
                    (State::Leased, None, _) => "LeaseIdMissing",
                    (State::Leased, Some(i), _) if i == other => "LeaseIdMismatchWithBlobOperation",
                    (State::Present, Some(_), _) => "LeaseNotPresentWithBlobOperation",
                    (
                        _,
                        _,
                        "if-match stale" | "if-none-match current" | "if-unmodified-since 0",
                    ) => "ConditionNotMet",
                    _ => "ok",
                };
                assert_eq!(put, want, "{st:?}, lease id {id:?}, {what}");
            }
        }
    }
}

#[test]
fn staged_blocks_are_recycled_and_never_show_in_another_blob() {
    use std::os::unix::fs::MetadataExt;
    let (_dir, s) = store();
    fs::create_dir_all(s.root.join("acct/c")).unwrap();
    let stage = |blob: &str, id: &str, data: &[u8]| -> u64 {
        let tmp = s.root.join(format!("acct/c/.tmp/{blob}-{id}"));
        fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        s.pool.write(&tmp, data).unwrap();
        let ino = fs::metadata(&tmp).unwrap().ino();
        s.put_block("acct", "c", blob, id, &tmp, &Access::default())
            .unwrap();
        ino
    };
    let commit = |blob: &str, list: &[(BlockRef, &str)]| {
        let list: Vec<_> = list.iter().map(|(k, i)| (*k, i.to_string())).collect();
        s.put_block_list(
            "acct",
            "c",
            blob,
            &list,
            HttpProps::default(),
            Default::default(),
            &Access::default(),
        )
        .unwrap();
        fs::read(s.blob_paths("acct", "c", blob).data).unwrap()
    };
    let (a, b) = ("QUFB", "QkJC");
    let first = [stage("one", a, &[1u8; 8192]), stage("one", b, &[2u8; 4096])];
    let one = commit(
        "one",
        &[(BlockRef::Uncommitted, b), (BlockRef::Uncommitted, a)],
    );
    assert_eq!(one, [vec![2u8; 4096], vec![1u8; 8192]].concat());
    assert_eq!(
        s.pool.held(),
        8192 + 4096,
        "both block files kept for reuse"
    );

    // The next blob's blocks are written over the same files; shorter ones leave no tail.
    let second = [stage("two", a, &[3u8; 100]), stage("two", b, &[4u8; 5000])];
    assert_eq!(s.pool.held(), 0);
    let mut reused = second.to_vec();
    reused.sort();
    let mut was = first.to_vec();
    was.sort();
    assert_eq!(reused, was, "the recycled inodes");
    let two = commit(
        "two",
        &[(BlockRef::Uncommitted, a), (BlockRef::Uncommitted, b)],
    );
    assert_eq!(two, [vec![3u8; 100], vec![4u8; 5000]].concat());
    // The committed blob is a copy: reusing its blocks' files changed nothing in it.
    assert_eq!(
        fs::read(s.blob_paths("acct", "c", "one").data).unwrap(),
        one
    );

    // Recommitting the first blob from its committed blocks still reads its own content.
    stage("one", "Q0ND", &[5u8; 10]);
    let again = commit(
        "one",
        &[(BlockRef::Committed, a), (BlockRef::Uncommitted, "Q0ND")],
    );
    assert_eq!(again, [vec![1u8; 8192], vec![5u8; 10]].concat());
}
