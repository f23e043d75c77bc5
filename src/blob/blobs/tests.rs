use super::*;
use std::io::Write;

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
