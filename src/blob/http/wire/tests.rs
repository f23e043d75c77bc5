use super::*;

fn names(st: &mut State) -> Vec<(u64, Vec<String>)> {
    st.names.drain(..).collect()
}

/// Feeds `bytes` to the reader in pieces of `step` bytes.
fn read_in_pieces(bytes: &[u8], step: usize) -> State {
    let mut st = State::default();
    for piece in bytes.chunks(step) {
        st.on_read(piece);
    }
    st
}

const REQUESTS: &[u8] = b"PUT /a/c?restype=container HTTP/1.1\r\nHost: x\r\nx-ms-meta-MyKey: 1\r\n\
x-ms-meta-other: 2\r\nContent-Length: 8\r\n\r\n\r\n\r\nabcd\
\r\nPUT /a/c/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-MS-META-Big: 3\r\n\r\n\
4;ext=1\r\n\r\n\r\n\r\n0\r\nTrailer: t\r\n\r\n\
HEAD /a/c/b HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn reader_follows_lengths_chunks_and_heads_in_any_pieces() {
    for step in 1..=REQUESTS.len() {
        let mut st = read_in_pieces(REQUESTS, step);
        assert!(!st.lost, "lost at step {step}");
        assert_eq!(
            names(&mut st),
            vec![
                (0, vec!["MyKey".to_string(), "other".to_string()]),
                (1, vec!["Big".to_string()]),
                (2, vec![]),
            ],
            "step {step}"
        );
        assert_eq!(st.heads, [false, false, true], "step {step}");
    }
}

#[test]
fn a_body_that_looks_like_a_head_is_still_a_body() {
    let body = b"GET / HTTP/1.1\r\nx-ms-meta-Evil: 1\r\n\r\n";
    let mut req = format!(
        "PUT /a/c/b HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut st = read_in_pieces(&req, 7);
    assert_eq!(names(&mut st), vec![(0, vec![])]);
}

#[test]
fn a_malformed_head_makes_it_stand_aside() {
    let st = read_in_pieces(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 5);
    assert!(st.lost);
    let mut st = State::default();
    st.on_read(&vec![b'a'; MAX_HEAD + 10]);
    assert!(st.lost);
}

const RESPONSES: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nx-ms-meta-mykey: 1\r\nx-ms-meta-other: 2\r\ncontent-length: 4\r\n\r\nabcd\
HTTP/1.1 200 OK\r\nx-ms-meta-big: 1\r\ncontent-length: 100\r\n\r\n\
HTTP/1.1 200 OK\r\nx-ms-meta-mykey: 1\r\ncontent-length: 0\r\n\r\n";

fn writer() -> State {
    State {
        heads: [false, true, false].into(),
        replies: [
            (0, vec!["MyKey".to_string()]),
            (1, vec!["BIG".to_string()]),
            (2, vec!["MYKEY".to_string()]),
        ]
        .into(),
        ..State::default()
    }
}

fn recased(st: &mut State, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (at, name) in st.on_write(&[bytes], false) {
        out[at..at + name.len()].copy_from_slice(name.as_bytes());
    }
    st.on_write(&[bytes], true);
    out
}

#[test]
fn writer_recases_each_response_with_its_own_names() {
    let mut st = writer();
    let out = String::from_utf8(recased(&mut st, RESPONSES)).unwrap();
    assert_eq!(
        out,
        String::from_utf8_lossy(RESPONSES)
            .replacen("x-ms-meta-mykey", "x-ms-meta-MyKey", 1)
            .replace("x-ms-meta-big", "x-ms-meta-BIG")
            .replacen(
                "x-ms-meta-mykey: 1\r\ncontent-length: 0",
                "x-ms-meta-MYKEY: 1\r\ncontent-length: 0",
                1
            )
    );
    assert!(!st.lost);
    assert_eq!(st.write_seq, 3);
    assert!(st.heads.is_empty() && st.replies.is_empty());
}

#[test]
fn writer_follows_writes_split_anywhere() {
    // Split into two writes at every point: framing never gets lost, and names are re-cased
    // whenever their head is whole in one write.
    for cut in 1..RESPONSES.len() {
        let mut st = writer();
        let mut out = recased(&mut st, &RESPONSES[..cut]);
        out.extend(recased(&mut st, &RESPONSES[cut..]));
        assert!(!st.lost, "cut {cut}");
        assert_eq!(st.write_seq, 3, "cut {cut}");
        assert_eq!(out.len(), RESPONSES.len());
        assert!(out.eq_ignore_ascii_case(RESPONSES), "cut {cut}");
    }
}

#[test]
fn names_must_be_the_requests_own() {
    let wire = Wire::default();
    wire.lock()
        .on_read(b"PUT / HTTP/1.1\r\nx-ms-meta-MyKey: 1\r\n\r\nPUT / HTTP/1.1\r\n\r\n");
    let mut h = hyper::HeaderMap::new();
    h.insert("x-ms-meta-mykey", "1".parse().unwrap());
    assert_eq!(wire.request_names(&h), Some((0, vec!["MyKey".to_string()])));
    // The second request has no metadata; a map that says otherwise means we lost track.
    assert_eq!(wire.request_names(&h), None);
    assert!(wire.lock().lost);
}
