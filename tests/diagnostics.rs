//! Boot diagnostics: screenshots of a real guest's display, captured during boot on their own
//! and on demand, stored as the cloud names them (BMP) with a PNG beside.

mod common;

use std::time::{Duration, Instant};

use common::Node;

fn png_info(data: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(data));
    let mut r = dec.read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    (info.width, info.height, buf)
}

#[test]
fn screenshots_of_a_real_guest() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "shot", &[]);
    let id = vm["properties"]["vmId"].as_str().unwrap().to_string();

    // Captured on its own during boot, under the cloud's names.
    let deadline = Instant::now() + Duration::from_secs(60);
    let auto = loop {
        let found = common::walk(&node.state).into_iter().find(|p| {
            p.to_string_lossy()
                .ends_with(&format!("shot.{id}.screenshot.bmp"))
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no boot screenshot was stored");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(auto
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("bootdiagnostics-shot-{id}")));
    assert!(auto.with_extension("png").exists());

    // On demand: the guest's text console (kernel messages, then the login prompt on tty1).
    node.wait_for_log("rg", "shot", "VMNODE-BOOT: ready", Duration::from_secs(120));
    let file = node.dir.path().join("now.png");
    let out = node.ok(&[
        "vm",
        "boot-diagnostics",
        "screenshot",
        "-g",
        "rg",
        "-n",
        "shot",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.contains("now.png"), "{out}");
    let (w, h, pixels) = png_info(&std::fs::read(&file).unwrap());
    assert!(w >= 640 && h >= 350, "{w}x{h}");
    // Not a blank screen: text is drawn in more than one colour.
    let first = &pixels[..3];
    let differing = pixels.chunks_exact(3).filter(|p| p != &first).count();
    assert!(
        differing > 1000,
        "the screenshot is (nearly) uniform: {differing} differing pixels"
    );
    std::fs::copy(
        &file,
        std::env::temp_dir().join("vmnode-test-screenshot.png"),
    )
    .unwrap();

    let bmp_file = node.dir.path().join("now.bmp");
    node.ok(&[
        "vm",
        "boot-diagnostics",
        "screenshot",
        "-g",
        "rg",
        "-n",
        "shot",
        "--bmp",
        "--file",
        bmp_file.to_str().unwrap(),
    ]);
    let bmp = std::fs::read(&bmp_file).unwrap();
    assert_eq!(&bmp[..2], b"BM");
    let bw = u32::from_le_bytes(bmp[18..22].try_into().unwrap());
    let bh = u32::from_le_bytes(bmp[22..26].try_into().unwrap());
    assert_eq!((bw, bh), (w, h));

    // A stopped VM still answers with its last screenshot: the last one stored while it ran
    // (the cloud-named PNG), decoded as the running captures were, byte for byte.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "shot", "--skip-shutdown"]);
    let last = std::fs::read(auto.with_extension("png")).unwrap();
    std::fs::remove_file(&file).unwrap();
    node.ok(&[
        "vm",
        "boot-diagnostics",
        "screenshot",
        "-g",
        "rg",
        "-n",
        "shot",
        "--file",
        file.to_str().unwrap(),
    ]);
    let answered = std::fs::read(&file).expect("the stopped VM's screenshot");
    let (sw, sh, _) = png_info(&answered);
    assert_eq!((sw, sh), (w, h));
    assert!(
        answered == last,
        "not the last screenshot: {} bytes, the stored one {}",
        answered.len(),
        last.len()
    );
}
