use super::transcript::{civil_from_days, format_timestamp};
use super::*;
use serde_json::json;
use tokio::net::UnixListener;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u6"}, "capabilities": ["oob"]}}"#;
const WAIT: Duration = Duration::from_secs(5);

/// Server side of a fake QMP connection.
struct FakeConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl FakeConn {
    /// Accept one client and do the server side of the handshake.
    async fn accept(listener: &UnixListener) -> FakeConn {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, w) = stream.into_split();
        let mut conn = FakeConn {
            reader: BufReader::new(r),
            writer: w,
        };
        conn.send_raw(GREETING).await;
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "qmp_capabilities");
        assert!(cmd.get("arguments").is_none(), "{cmd}");
        conn.reply(&cmd, json!({})).await;
        conn
    }

    /// Next command sent by the client.
    async fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "client closed the connection");
        assert!(line.ends_with('\n'));
        serde_json::from_str(&line).unwrap()
    }

    async fn send_raw(&mut self, line: &str) {
        // QEMU terminates lines with CRLF.
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    async fn reply(&mut self, cmd: &Value, ret: Value) {
        self.send(json!({"return": ret, "id": cmd["id"]})).await;
    }
}

fn fake_listener() -> (tempfile::TempDir, PathBuf, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    (dir, path, listener)
}

#[tokio::test]
async fn query_status_typed_round_trip() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "query-status");
        assert!(cmd.get("arguments").is_none(), "{cmd}");
        assert!(cmd["id"].is_u64());
        // QEMU 7.2 shape (with `singlestep`) plus a field nobody knows.
        let ret =
            json!({"running": false, "singlestep": false, "status": "prelaunch", "future": [1]});
        conn.reply(&cmd, ret).await;
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let v = qmp.version().unwrap();
    assert_eq!((v.qemu.major, v.qemu.minor, v.qemu.micro), (7, 2, 0));
    assert!(qmp.greeting()["QMP"].is_object());
    let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    assert!(!status.running);
    assert!(matches!(status.status, qapi::qmp::RunState::prelaunch));
    assert_eq!(qmp.pending_len(), 0);
    assert!(!qmp.is_closed());
    server.await.unwrap();
}

/// `add-fd` carries the file itself (SCM_RIGHTS) on its own line: the server receives an fd
/// that reads the file the client passed.
#[tokio::test]
async fn add_fd_passes_the_file_with_its_command() {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::Read as _;
    use std::os::fd::{AsRawFd, FromRawFd};
    let (dir, path, listener) = fake_listener();
    let file = dir.path().join("disk");
    std::fs::write(&file, b"the disk").unwrap();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        // remove-fd first: the set is emptied before the new fd goes in.
        let rm = conn.recv().await;
        assert_eq!(rm["execute"], "remove-fd");
        assert_eq!(rm["arguments"]["fdset-id"], 1001);
        conn.reply(&rm, json!({})).await;
        let sock: &tokio::net::UnixStream = conn.reader.get_ref().as_ref();
        let (line, fd) = loop {
            sock.readable().await.unwrap();
            let r = sock.try_io(tokio::io::Interest::READABLE, || {
                let mut buf = [0u8; 4096];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let m = recvmsg::<()>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(std::io::Error::from)?;
                let mut fd = None;
                for c in m.cmsgs().unwrap() {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        fd = fds.first().copied();
                    }
                }
                let n = m.bytes;
                Ok((buf[..n].to_vec(), fd))
            });
            match r {
                Ok(v) => break v,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        let cmd: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(cmd["execute"], "add-fd");
        assert_eq!(cmd["arguments"], json!({"fdset-id": 1001, "opaque": "dd1"}));
        // SAFETY: the fd was just received and is owned by nothing else.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd.expect("an fd with add-fd")) };
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "the disk");
        conn.reply(&cmd, json!({"fdset-id": 1001, "fd": 42})).await;
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let f = std::fs::File::open(&file).unwrap();
    use std::os::fd::AsFd;
    qmp.add_fd(f.as_fd(), 1001, "dd1").await.unwrap();
    server.await.unwrap();
}

/// A monitor that does not answer fails `add_fd` once, on its `remove-fd`, within the query
/// timeout (fd bookkeeping does no I/O), and the `add-fd` is never sent after it.
#[tokio::test]
async fn add_fd_to_a_silent_monitor_times_out_once_and_sends_no_add() {
    let (dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let rm = conn.recv().await;
        assert_eq!(rm["execute"], "remove-fd");
        // No reply; whatever comes next (nothing should) is returned.
        tokio::time::timeout(QUERY_TIMEOUT + Duration::from_secs(1), conn.recv())
            .await
            .ok()
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let file = std::fs::File::create(dir.path().join("screen.ppm")).unwrap();
    use std::os::fd::AsFd;
    let err = qmp.add_fd(file.as_fd(), 1, "screendump").await.unwrap_err();
    match &err {
        QmpError::Timeout { command, after } => {
            assert_eq!(command, "remove-fd");
            assert_eq!(*after, QUERY_TIMEOUT);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(
        server.await.unwrap(),
        None,
        "add-fd was sent after the timeout"
    );
}

#[tokio::test]
async fn out_of_order_replies_matched_by_id() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let a = conn.recv().await;
        let b = conn.recv().await;
        assert_ne!(a["id"], b["id"]);
        // Answer the second one first.
        for cmd in [&b, &a] {
            let ret = match cmd["execute"].as_str().unwrap() {
                "query-status" => {
                    json!({"running": true, "singlestep": false, "status": "running"})
                }
                "query-version" => {
                    json!({"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "pkg"})
                }
                other => panic!("unexpected command {other}"),
            };
            conn.reply(cmd, ret).await;
        }
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    // Run one of them on another task: handles and futures are Send.
    let handle = qmp.clone();
    let status = tokio::spawn(async move { handle.execute(qapi::qmp::query_status {}).await });
    let version = qmp.execute(qapi::qmp::query_version {}).await;
    let status = status.await.unwrap();
    let status = status.unwrap();
    assert!(status.running);
    assert!(matches!(status.status, qapi::qmp::RunState::running));
    assert_eq!(version.unwrap().qemu.minor, 2);
    server.await.unwrap();
}

#[tokio::test]
async fn unknown_events_and_garbage_are_skipped() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let cmd = conn.recv().await;
        conn.send(json!({"event": "SOME_FUTURE_EVENT", "data": {"x": 1},
            "timestamp": {"seconds": 1700000000, "microseconds": 42}}))
            .await;
        conn.send_raw("this is not json {").await;
        conn.send_raw("[1, 2, 3]").await;
        conn.send_raw(r#"{"unexpected": true}"#).await;
        conn.send_raw(r#"{"return": {}, "id": "not-ours"}"#).await;
        conn.send_raw("").await;
        conn.send(json!({"event": "SHUTDOWN",
            "data": {"guest": true, "reason": "guest-shutdown", "added-in-qemu-99": 1},
            "timestamp": {"seconds": 1700000001, "microseconds": 7}}))
            .await;
        conn.send(json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}))
            .await;
        conn.reply(
            &cmd,
            json!({"running": false, "singlestep": false, "status": "shutdown"}),
        )
        .await;
        // The connection still works afterwards.
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "query-name");
        conn.reply(&cmd, json!({"name": "vm1"})).await;
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let mut events = qmp.events();
    let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    assert!(matches!(status.status, qapi::qmp::RunState::shutdown));

    let ev = events.recv().await.unwrap();
    assert_eq!(ev.name, "SOME_FUTURE_EVENT");
    assert_eq!(ev.data, json!({"x": 1}));
    assert_eq!(ev.timestamp, Some((1_700_000_000, 42)));
    assert!(ev.parse::<qapi::qmp::SHUTDOWN>().is_none());

    let ev = events.recv().await.unwrap();
    assert_eq!(ev.name, "SHUTDOWN");
    assert_eq!(ev.timestamp, Some((1_700_000_001, 7)));
    let shutdown = ev.parse::<qapi::qmp::SHUTDOWN>().unwrap().unwrap();
    assert!(shutdown.guest);
    assert!(matches!(
        shutdown.reason,
        qapi::qmp::ShutdownCause::guest_shutdown
    ));

    let ev = events.recv().await.unwrap();
    assert_eq!(ev.name, "STOP");
    assert_eq!(ev.data, json!({}));
    ev.parse::<qapi::qmp::STOP>().unwrap().unwrap();

    let name = qmp.execute(qapi::qmp::query_name {}).await.unwrap();
    assert_eq!(name.name.as_deref(), Some("vm1"));
    assert!(!qmp.is_closed());
    server.await.unwrap();
}

#[tokio::test]
async fn timeout_then_connection_still_works() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let slow = conn.recv().await;
        // No reply until the next command shows up; then reply late.
        let next = conn.recv().await;
        conn.reply(
            &slow,
            json!({"running": true, "singlestep": false, "status": "running"}),
        )
        .await;
        conn.reply(
            &next,
            json!({"running": false, "singlestep": false, "status": "paused"}),
        )
        .await;
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let err = qmp
        .execute_timeout(qapi::qmp::query_status {}, Duration::from_millis(200))
        .await
        .unwrap_err();
    match &err {
        QmpError::Timeout { command, after } => {
            assert_eq!(command, "query-status");
            assert_eq!(*after, Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(!err.is_closed());
    assert_eq!(qmp.pending_len(), 0);
    // The late reply to the first command must not be taken for this one.
    let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    assert!(matches!(status.status, qapi::qmp::RunState::paused));
    assert!(!qmp.is_closed());
    server.await.unwrap();
}

#[tokio::test]
async fn server_close_fails_pending_and_resolves_closed() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "system_powerdown");
        drop(conn);
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let mut events = qmp.events();
    let started = Instant::now();
    let err = qmp
        .execute_timeout(qapi::qmp::system_powerdown {}, WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Closed), "{err:?}");
    // Not a speed bound: WAIT is this command's own timeout, so an answer
    // before it shows the close failed the pending command at once instead of
    // leaving it to its timer (the hang this test guards against).
    assert!(started.elapsed() < WAIT);
    tokio::time::timeout(WAIT, qmp.closed()).await.unwrap();
    assert!(qmp.is_closed());
    assert_eq!(qmp.pending_len(), 0);
    // Everything afterwards fails fast with Closed.
    let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    assert!(matches!(
        events.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));
    assert!(matches!(
        qmp.events().recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));
    // A clone sees the same state.
    tokio::time::timeout(WAIT, qmp.clone().closed())
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn error_reply_and_decode_error() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "device_del");
        assert_eq!(cmd["arguments"], json!({"id": "nope"}));
        conn.send(json!({"error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}, "id": cmd["id"]}))
            .await;
        let cmd = conn.recv().await;
        assert_eq!(cmd["execute"], "x-new-thing");
        assert_eq!(cmd["arguments"], json!({"a": 1}));
        // An error class the qapi crate does not know.
        conn.send(json!({"error": {"class": "SomeNewClass", "desc": "nah"}, "id": cmd["id"]}))
            .await;
        let cmd = conn.recv().await;
        conn.reply(&cmd, json!({"status": 42})).await;
        conn
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let err = qmp
        .execute(qapi::qmp::device_del {
            id: "nope".to_owned(),
        })
        .await
        .unwrap_err();
    match err {
        QmpError::Command {
            command,
            class,
            desc,
        } => {
            assert_eq!(command, "device_del");
            assert_eq!(class, "DeviceNotFound");
            assert_eq!(desc, "Device 'nope' not found");
        }
        other => panic!("expected Command, got {other:?}"),
    }
    let err = qmp
        .execute_raw("x-new-thing", Some(json!({"a": 1})), WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Command { class, desc, .. } if class == "SomeNewClass" && desc == "nah"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "QMP x-new-thing failed: SomeNewClass: nah");
    let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
    assert!(matches!(err, QmpError::Decode { .. }), "{err:?}");
    assert!(!qmp.is_closed());
    server.await.unwrap();
}

#[tokio::test]
async fn transcript_records_both_directions() {
    let (dir, path, listener) = fake_listener();
    let transcript = dir.path().join("qmp.log");
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let cmd = conn.recv().await;
        conn.send(json!({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}))
            .await;
        conn.reply(&cmd, json!({})).await;
        conn
    });
    let qmp = Qmp::connect(&path, Some(transcript.clone())).await.unwrap();
    qmp.execute(qapi::qmp::cont {}).await.unwrap();
    let conn = server.await.unwrap();
    drop(conn);
    tokio::time::timeout(WAIT, qmp.closed()).await.unwrap();

    let text = std::fs::read_to_string(&transcript).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has(r#"<- {"QMP""#), "{text}");
    assert!(has(r#"-> {"execute":"qmp_capabilities","id":0}"#), "{text}");
    assert!(has(r#"-> {"execute":"cont","id":1}"#), "{text}");
    assert!(has(r#"<- {"event":"RESUME""#), "{text}");
    assert!(has(r#"<- {"id":1,"return":{}}"#), "{text}");
    assert!(has("-- connection closed"), "{text}");
    for line in &lines {
        // "YYYY-MM-DDTHH:MM:SS.uuuuuuZ <dir> ..."
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(ts.len(), 27, "{line}");
        assert!(ts.ends_with('Z'), "{line}");
        assert!(
            ["-> ", "<- ", "-- "].iter().any(|p| rest.starts_with(p)),
            "{line}"
        );
    }
}

#[tokio::test]
async fn connect_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let err = Qmp::connect(&missing, None).await.unwrap_err();
    assert!(
        matches!(&err, QmpError::Connect { path, .. } if *path == missing),
        "{err:?}"
    );
    let err = Qmp::connect_with_retry(&missing, None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Connect { .. }), "{err:?}");

    // A peer that accepts but never greets: the handshake times out.
    let (_dir, path, listener) = fake_listener();
    let silent = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(WAIT).await;
        drop(stream);
    });
    let err = Qmp::connect_timeout(&path, None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
    silent.abort();

    // A peer that is not QMP.
    let (_dir, path, listener) = fake_listener();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"{\"hello\": 1}\r\n").await.unwrap();
        tokio::time::sleep(WAIT).await;
    });
    let err = Qmp::connect(&path, None).await.unwrap_err();
    assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn dropping_last_handle_closes_socket() {
    let (_dir, path, listener) = fake_listener();
    let server = tokio::spawn(async move {
        let mut conn = FakeConn::accept(&listener).await;
        let mut line = String::new();
        let n = conn.reader.read_line(&mut line).await.unwrap();
        assert_eq!(n, 0, "expected EOF, got {line:?}");
    });
    let qmp = Qmp::connect(&path, None).await.unwrap();
    let clone = qmp.clone();
    let _events = qmp.events();
    drop(qmp);
    assert!(!clone.is_closed());
    drop(clone);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Qmp>();
    send_sync::<QmpError>();
    send_sync::<QmpEvent>();
}

#[test]
fn timeout_table() {
    assert_eq!(timeout_for("query-status"), QUERY_TIMEOUT);
    assert_eq!(timeout_for("query-version"), QUERY_TIMEOUT);
    assert_eq!(timeout_for("device_add"), SLOW_TIMEOUT);
    assert_eq!(timeout_for("blockdev-add"), SLOW_TIMEOUT);
    assert_eq!(timeout_for("screendump"), SLOW_TIMEOUT);
    assert_eq!(timeout_for("quit"), DEFAULT_TIMEOUT);
    assert_eq!(timeout_for("system_powerdown"), DEFAULT_TIMEOUT);
    assert_eq!(
        timeout_for(<qapi::qmp::screendump as qapi::Command>::NAME),
        SLOW_TIMEOUT
    );
}

#[test]
fn timestamps() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    let t = UNIX_EPOCH + Duration::from_micros(1_704_067_199_123_456);
    assert_eq!(format_timestamp(t), "2023-12-31T23:59:59.123456Z");
}

/// Against the real QEMU binary; skipped if it is not installed.
#[tokio::test]
async fn real_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let transcript = dir.path().join("qmp.log");
    let spawned = tokio::process::Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-qmp",
        ])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: qemu-system-x86_64 not installed");
            return;
        }
        Err(e) => panic!("cannot spawn qemu: {e}"),
    };

    let qmp = Qmp::connect_with_retry(&sock, Some(transcript.clone()), Duration::from_secs(20))
        .await
        .unwrap();
    let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    assert!(!status.running);
    assert!(
        matches!(
            status.status,
            qapi::qmp::RunState::prelaunch | qapi::qmp::RunState::paused
        ),
        "{:?}",
        status.status
    );
    let version = qmp.execute(qapi::qmp::query_version {}).await.unwrap();
    assert!(version.qemu.major >= 2, "{version:?}");
    let greeting = qmp.version().unwrap();
    assert_eq!(greeting.qemu.major, version.qemu.major);

    let err = qmp
        .execute_raw("no-such-command", None, WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Command { class, .. } if class == "CommandNotFound"),
        "{err:?}"
    );

    // A file handed over with add-fd (SCM_RIGHTS) lands in the fd set, and remove-fd drops it.
    let file = std::fs::File::create(dir.path().join("passed")).unwrap();
    use std::os::fd::AsFd;
    qmp.add_fd(file.as_fd(), 2000, "passed").await.unwrap();
    let sets = qmp.execute_raw("query-fdsets", None, WAIT).await.unwrap();
    let set = sets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fdset-id"] == 2000)
        .unwrap_or_else(|| panic!("{sets}"));
    assert_eq!(set["fds"][0]["opaque"], "passed", "{sets}");
    // QEMU closes a removed fd only while the machine runs (not in `-S`'s prelaunch).
    qmp.execute_raw("cont", None, WAIT).await.unwrap();
    qmp.remove_fd(2000).await;
    let sets = qmp.execute_raw("query-fdsets", None, WAIT).await.unwrap();
    assert!(
        !sets
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["fdset-id"] == 2000),
        "{sets}"
    );

    let mut events = qmp.events();
    match qmp.execute(qapi::qmp::quit {}).await {
        // QEMU may close the socket before its reply gets through.
        Ok(qapi::Empty {}) | Err(QmpError::Closed) => {}
        Err(e) => panic!("quit failed: {e:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), qmp.closed())
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    // QEMU emits SHUTDOWN before it closes the monitor.
    let mut shutdown = None;
    while let Ok(ev) = events.recv().await {
        if let Some(parsed) = ev.parse::<qapi::qmp::SHUTDOWN>() {
            shutdown = Some(parsed.unwrap());
        }
    }
    let shutdown = shutdown.expect("no SHUTDOWN event after quit");
    assert!(!shutdown.guest);
    assert!(matches!(
        shutdown.reason,
        qapi::qmp::ShutdownCause::host_qmp_quit
    ));
    let err = qmp.execute(qapi::qmp::query_status {}).await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    let text = std::fs::read_to_string(&transcript).unwrap();
    assert!(text.contains(r#"-> {"execute":"quit""#), "{text}");
}
