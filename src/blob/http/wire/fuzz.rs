//! The framing follower under any bytes, for `crate::fuzzing`: what it learns must not depend on
//! how the bytes were split into reads and writes, and a re-casing may only change case.

use super::{State, Step};

/// What the reader made of a stream: lost, or the requests' names and HEAD flags.
fn read(bytes: &[u8], piece: usize) -> State {
    let mut st = State::default();
    for p in bytes.chunks(piece.max(1)) {
        if st.lost {
            break;
        }
        st.on_read(p);
    }
    st
}

/// Follows `bytes` as client requests (whole, and read in pieces of `piece` bytes) and then as
/// server responses (whole, and in two writes cut at `piece`/64 of the way); panics on a broken
/// invariant. Returns the requests followed.
pub(crate) fn check(bytes: &[u8], piece: usize) -> usize {
    let whole = read(bytes, bytes.len());
    let split = read(bytes, piece);
    if !whole.lost && !split.lost {
        assert_eq!(whole.names, split.names, "names depend on the reads' split");
        assert_eq!(
            whole.heads, split.heads,
            "HEAD flags depend on the reads' split"
        );
        assert_eq!(whole.read_seq, split.read_seq);
    }
    let requests = whole.names.len();
    // The same bytes as responses, each owed the spellings of a request's names.
    let mut writer = State {
        heads: whole.heads.clone(),
        replies: whole
            .names
            .iter()
            .map(|(seq, names)| (*seq, names.iter().map(|n| n.to_ascii_uppercase()).collect()))
            .collect(),
        ..State::default()
    };
    // In one write: every re-casing covers the same bytes in another case.
    let mut once = writer.clone_for_write();
    for (at, name) in once.on_write(&[bytes], true) {
        let span = bytes.get(at..at + name.len());
        assert!(
            span.is_some_and(|s| s.eq_ignore_ascii_case(name.as_bytes())),
            "a re-casing at {at} ({name}) changes more than case"
        );
    }
    // In two writes (hyper writes a head whole, then the body), the writer ends where one
    // write would.
    let cut = piece * bytes.len() / 64;
    let (first, second) = bytes.split_at(cut.min(bytes.len()));
    writer.on_write(&[first], true);
    if !writer.lost {
        writer.on_write(&[second], true);
    }
    if !once.lost && !writer.lost {
        assert_eq!(
            once.write_seq, writer.write_seq,
            "responses depend on the writes' split"
        );
    }
    // A framer step never claims more than it was given.
    let mut f = super::Framer::default();
    if let Step::Head { end, .. } | Step::BodyEnd(end) = f.step(bytes) {
        assert!(end <= bytes.len());
    }
    requests
}

impl State {
    fn clone_for_write(&self) -> State {
        State {
            heads: self.heads.clone(),
            replies: self.replies.clone(),
            ..State::default()
        }
    }
}
