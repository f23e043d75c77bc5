//! The case of `x-ms-meta-*` names on the wire, which hyper does not show.
//!
//! The cloud keeps a metadata name as it was first spelt (`x-ms-meta-MyKey` comes back as
//! `MyKey`), but hyper lower-cases every header name and keeps the original spelling only in a
//! private extension. So each connection's socket is wrapped in [`CaseIo`], which follows the
//! HTTP/1.1 framing of both directions (heads, `Content-Length` and chunked bodies, HEAD
//! responses without a body):
//!
//! - reading, it notes the `x-ms-meta-*` names of every request head as sent; the service takes
//!   them in order ([`Wire::request_names`]) and checks they are the request's names;
//! - writing, it re-cases the `x-ms-meta-*` names in the next response head to the spellings
//!   the service gave for that response ([`Wire::reply`]). Only case changes, never a length, so
//!   framing is untouched.
//!
//! Anything it cannot follow (a malformed or oversized head, a head split across writes) makes
//! it stand aside for the rest of the connection: names are then lower-case, as hyper gives
//! them, never wrong.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest head followed; hyper's own limit is larger, but ours are far smaller.
const MAX_HEAD: usize = 64 << 10;
const META: &[u8] = b"x-ms-meta-";

/// The spellings a response's metadata names should have on the wire, put in the response's
/// extensions by the handler; the server hands it to [`Wire::reply`].
#[derive(Clone, Debug)]
pub struct MetaCase(pub Vec<String>);

/// What one connection's reader learnt, for its service and its writer.
#[derive(Default)]
pub struct Wire {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once either direction lost the framing: no more re-casing on this connection.
    lost: bool,
    read: Framer,
    write: Framer,
    /// Requests read so far; final responses written so far.
    read_seq: u64,
    write_seq: u64,
    /// Per request read, its number and metadata names as sent, until the service takes them.
    names: VecDeque<(u64, Vec<String>)>,
    /// Per request read, whether it was a HEAD (its response has no body), until its response
    /// head is written.
    heads: VecDeque<bool>,
    /// Spellings for the response to request number n.
    replies: VecDeque<(u64, Vec<String>)>,
}

impl Wire {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `x-ms-meta-*` names of the request hyper just parsed, spelt as sent (without the
    /// prefix), and the request's number for [`Wire::reply`]. None when the reader lost track
    /// or its names are not this request's.
    pub fn request_names(&self, headers: &hyper::HeaderMap) -> Option<(u64, Vec<String>)> {
        let mut st = self.lock();
        if st.lost {
            return None;
        }
        let (seq, names) = st.names.pop_front()?;
        let mut sent: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut seen: Vec<&str> = headers
            .keys()
            .flat_map(|k| headers.get_all(k).iter().map(move |_| k.as_str()))
            .filter_map(|k| k.strip_prefix("x-ms-meta-"))
            .collect();
        sent.sort();
        seen.sort_unstable();
        if sent != seen {
            st.lost = true;
            return None;
        }
        Some((seq, names))
    }

    /// The response to request number `seq` carries metadata spelt as `names`.
    pub fn reply(&self, seq: u64, names: Vec<String>) {
        let mut st = self.lock();
        if !st.lost && seq >= st.write_seq {
            st.replies.push_back((seq, names));
        }
    }
}

/// Where a byte stream is: in a head (the bytes so far), in a body, or in a chunked body.
#[derive(Clone, Debug)]
enum Framer {
    Head(Vec<u8>),
    /// In a body with this many bytes left.
    Body(u64),
    Chunked(Chunk),
}

impl Default for Framer {
    fn default() -> Self {
        Framer::Head(Vec::new())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line: the size so far, and whether we are in an extension.
    Size(u64, bool),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// Reading a trailer line: whether it is empty so far.
    Trailer(bool),
    TrailerLf(bool),
}

/// What [`Framer::step`] found.
enum Step {
    /// All of the input was consumed inside a head or body.
    More,
    /// A head ended after `end` bytes of this input; it began at `start` of this input if it
    /// began in it.
    Head {
        end: usize,
        start: Option<usize>,
        head: Vec<u8>,
    },
    /// A body ended after `end` bytes of this input.
    BodyEnd(usize),
    Lost,
}

impl Framer {
    /// Consumes from `buf` until the end of `buf`, of a head, or of a body.
    fn step(&mut self, buf: &[u8]) -> Step {
        match self {
            Framer::Head(so_far) => {
                let mut head = std::mem::take(so_far);
                let mut i = 0;
                // Empty lines before a request line are allowed and skipped.
                if head.is_empty() {
                    while i < buf.len() && (buf[i] == b'\r' || buf[i] == b'\n') {
                        i += 1;
                    }
                }
                let start = head.is_empty().then_some(i);
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&buf[i..]);
                match find(&head[from..], b"\r\n\r\n") {
                    Some(p) => {
                        let len = from + p + 4;
                        let end = buf.len() - (head.len() - len);
                        head.truncate(len);
                        Step::Head { end, start, head }
                    }
                    None if head.len() > MAX_HEAD => Step::Lost,
                    None => {
                        *self = Framer::Head(head);
                        Step::More
                    }
                }
            }
            Framer::Body(n) => {
                if (buf.len() as u64) < *n {
                    *n -= buf.len() as u64;
                    return Step::More;
                }
                let end = *n as usize;
                *self = Framer::default();
                Step::BodyEnd(end)
            }
            Framer::Chunked(c) => {
                let mut i = 0;
                while i < buf.len() {
                    if let Chunk::Data(n) = *c {
                        // The chunk's data in one go.
                        let left = (buf.len() - i) as u64;
                        if left < n {
                            *c = Chunk::Data(n - left);
                            return Step::More;
                        }
                        i += n as usize;
                        *c = Chunk::DataCr;
                        continue;
                    }
                    let b = buf[i];
                    i += 1;
                    *c = match (*c, b) {
                        (Chunk::Size(n, false), b';') => Chunk::Size(n, true),
                        (Chunk::Size(n, _), b'\r') => Chunk::SizeLf(n),
                        (Chunk::Size(n, true), _) => Chunk::Size(n, true),
                        (Chunk::Size(n, false), b) => match (b as char).to_digit(16) {
                            Some(d) if n >> 56 == 0 => Chunk::Size(n * 16 + u64::from(d), false),
                            _ => return Step::Lost,
                        },
                        (Chunk::SizeLf(0), b'\n') => Chunk::Trailer(true),
                        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
                        (Chunk::DataCr, b'\r') => Chunk::DataLf,
                        (Chunk::DataLf, b'\n') => Chunk::Size(0, false),
                        (Chunk::Trailer(e), b'\r') => Chunk::TrailerLf(e),
                        (Chunk::Trailer(_), _) => Chunk::Trailer(false),
                        (Chunk::TrailerLf(true), b'\n') => {
                            *self = Framer::default();
                            return Step::BodyEnd(i);
                        }
                        (Chunk::TrailerLf(false), b'\n') => Chunk::Trailer(true),
                        _ => return Step::Lost,
                    };
                }
                Step::More
            }
        }
    }

    /// After a head: the body that follows, from its `Content-Length` or `Transfer-Encoding`.
    fn body_of(&mut self, head: &Head, no_body: bool) {
        *self = if no_body {
            Framer::default()
        } else if head.chunked {
            Framer::Chunked(Chunk::Size(0, false))
        } else {
            match head.length {
                Some(n) if n > 0 => Framer::Body(n),
                _ => Framer::default(),
            }
        };
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// What we need of a head.
struct Head {
    /// The request method or the response status line's first word after the version.
    first: String,
    status: u16,
    length: Option<u64>,
    chunked: bool,
    /// `x-ms-meta-*` names as sent, each with where its name part starts in the head.
    meta: Vec<(String, usize)>,
}

fn parse_head(head: &[u8], response: bool) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    let mut words = first.split(' ');
    let (first, status) = if response {
        words.next()?.strip_prefix("HTTP/")?;
        let status: u16 = words.next()?.parse().ok()?;
        (String::new(), status)
    } else {
        (words.next()?.to_string(), 0)
    };
    let mut h = Head {
        first,
        status,
        length: None,
        chunked: false,
        meta: Vec::new(),
    };
    let mut off = first_line_len(text) + 2;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.len() > META.len()
            && name.as_bytes()[..META.len()].eq_ignore_ascii_case(META)
        {
            h.meta
                .push((name[META.len()..].to_string(), off + META.len()));
        }
        off += line.len() + 2;
    }
    Some(h)
}

fn first_line_len(text: &str) -> usize {
    text.find("\r\n").unwrap_or(text.len())
}

impl State {
    /// Follows `n` bytes the client sent.
    fn on_read(&mut self, mut buf: &[u8]) {
        while !self.lost && !buf.is_empty() {
            match self.read.step(buf) {
                Step::More => return,
                Step::BodyEnd(end) => buf = &buf[end..],
                Step::Lost => self.lost = true,
                Step::Head { end, head, .. } => {
                    let Some(h) = parse_head(&head, false) else {
                        self.lost = true;
                        return;
                    };
                    self.read.body_of(&h, false);
                    let names = h.meta.into_iter().map(|(n, _)| n).collect();
                    self.names.push_back((self.read_seq, names));
                    self.read_seq += 1;
                    self.heads.push_back(h.first == "HEAD");
                    buf = &buf[end..];
                }
            }
        }
    }

    /// Follows the response bytes in `bufs` (as if one buffer). With `apply`, the writer's
    /// state moves on; without, nothing changes and the re-casings to make are returned as
    /// (offset in the bytes, spelling).
    fn on_write(&mut self, bufs: &[&[u8]], apply: bool) -> Vec<(usize, String)> {
        let mut framer = self.write.clone();
        let mut seq = self.write_seq;
        let mut out = Vec::new();
        let mut base = 0;
        for b in bufs {
            let mut buf = *b;
            let mut at = base;
            while !buf.is_empty() {
                match framer.step(buf) {
                    Step::More => break,
                    Step::BodyEnd(end) => {
                        buf = &buf[end..];
                        at += end;
                    }
                    Step::Lost => {
                        self.lost |= apply;
                        return Vec::new();
                    }
                    Step::Head { end, start, head } => {
                        let Some(h) = parse_head(&head, true) else {
                            self.lost |= apply;
                            return Vec::new();
                        };
                        let informational = (100..200).contains(&h.status);
                        let mut no_body = informational || h.status == 204 || h.status == 304;
                        if !informational {
                            let i = (seq - self.write_seq) as usize;
                            no_body |= self.heads.get(i).copied().unwrap_or(false);
                            let names = self.replies.iter().find(|(s, _)| *s == seq);
                            if let (Some((_, names)), Some(start)) = (names, start) {
                                for (name, pos) in &h.meta {
                                    if let Some(n) =
                                        names.iter().find(|n| n.eq_ignore_ascii_case(name))
                                    {
                                        out.push((at + start + pos, n.clone()));
                                    }
                                }
                            }
                            seq += 1;
                        }
                        framer.body_of(&h, no_body);
                        buf = &buf[end..];
                        at += end;
                    }
                }
            }
            base += b.len();
        }
        if apply {
            for _ in self.write_seq..seq {
                self.heads.pop_front();
            }
            self.write_seq = seq;
            self.replies.retain(|(s, _)| *s >= seq);
            self.write = framer;
        }
        out
    }
}

/// A connection's socket, followed by its [`Wire`].
pub struct CaseIo<T> {
    inner: T,
    wire: Arc<Wire>,
}

impl<T> CaseIo<T> {
    pub fn new(inner: T, wire: Arc<Wire>) -> Self {
        CaseIo { inner, wire }
    }
}

/// `bufs` limited to their first `n` bytes.
fn prefix<'a>(bufs: &[&'a [u8]], mut n: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for b in bufs {
        if n == 0 {
            break;
        }
        let k = b.len().min(n);
        out.push(&b[..k]);
        n -= k;
    }
    out
}

impl<T: AsyncRead + Unpin> AsyncRead for CaseIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let mut st = this.wire.lock();
            if !st.lost {
                st.on_read(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> CaseIo<T> {
    fn write_slices(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        let mut st = self.wire.lock();
        if st.lost {
            drop(st);
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            return Pin::new(&mut self.inner).poll_write_vectored(cx, &slices);
        }
        let recase = st.on_write(bufs, false);
        // Owned copies of the slices with a name to re-case; the others as they are.
        let mut owned: Vec<Option<Vec<u8>>> = vec![None; bufs.len()];
        for (mut at, name) in recase {
            let mut i = 0;
            while i < bufs.len() && at >= bufs[i].len() {
                at -= bufs[i].len();
                i += 1;
            }
            let Some(b) = bufs.get(i) else { continue };
            let copy = owned[i].get_or_insert_with(|| b.to_vec());
            if at + name.len() <= copy.len() {
                copy[at..at + name.len()].copy_from_slice(name.as_bytes());
            }
        }
        let slices: Vec<IoSlice<'_>> = bufs
            .iter()
            .zip(&owned)
            .map(|(b, o)| IoSlice::new(o.as_deref().unwrap_or(b)))
            .collect();
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, &slices);
        if let Poll::Ready(Ok(n)) = r {
            st.on_write(&prefix(bufs, n), true);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CaseIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_slices(cx, &[buf])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.get_mut().write_slices(cx, &slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Its invariants under any bytes, for [`crate::fuzzing`].
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
