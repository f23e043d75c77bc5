//! Bodies in and out: the response body type (in memory, or chunks read from a file), and
//! request bodies to memory or to a file (over the store's pool of recycled files).

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};

use crate::blob::error::{BlobError, Result};

/// A response body: in memory, or chunks from a reader thread.
pub enum Body {
    Full(Option<Bytes>),
    Chunks {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        left: u64,
    },
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }
    pub fn from(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        Body::Full((!b.is_empty()).then_some(b))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Chunks { rx, left } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    *left = left.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Chunks { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            Body::Chunks { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

/// `len` bytes of `file` from `off`. A small range is read here; a larger one by a blocking
/// thread, in one piece up to 4 MiB (what the SDKs ask for at a time), else streamed in 1 MiB
/// chunks through a small channel.
pub fn file_body(file: std::fs::File, off: u64, len: u64) -> Body {
    const INLINE: u64 = 64 << 10;
    const CHUNK: u64 = 1 << 20;
    if len <= INLINE {
        return match read_at(&file, off, len as usize) {
            Ok(b) => Body::from(b),
            Err(e) => failed(e, len),
        };
    }
    let chunk = if len <= 4 * CHUNK { len } else { CHUNK };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = (end - pos).min(chunk) as usize;
            let r = read_at(&file, pos, n);
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            pos += n as u64;
        }
    });
    Body::Chunks { rx, left: len }
}

fn failed(e: std::io::Error, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(Err(e));
    Body::Chunks { rx, left: len }
}

/// Reads `len` bytes at `off` into a new buffer (not zeroed first: the read fills it); past
/// the end of the file reads zeros.
fn read_at(f: &std::fs::File, off: u64, len: usize) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = buf.spare_capacity_mut();
        let at = libc::off_t::try_from(off + done as u64).map_err(std::io::Error::other)?;
        // SAFETY: `spare` is writable memory of at least `len - done` bytes owned by `buf`;
        // pread writes at most that many bytes into it and reports how many.
        let n = unsafe { libc::pread(f.as_raw_fd(), spare.as_mut_ptr().cast(), len - done, at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: pread initialised the next `n` bytes (n <= len - done).
        unsafe { buf.set_len(done + n as usize) };
    }
    buf.resize(len, 0);
    Ok(Bytes::from(buf))
}

/// The whole request body, refusing more than `limit` bytes.
pub async fn body_bytes(body: Incoming, limit: usize) -> Result<Bytes> {
    use hyper::body::Body as _;
    // One allocation for the announced length (no copies as the buffer grows).
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(hint.min(limit));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| BlobError::invalid_input(format!("reading the body: {e}")))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > limit {
                return Err(BlobError::body_too_large());
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(Bytes::from(out))
}

/// Writes the request body to a new file at `path`; returns its length. A body of up to
/// 8 MiB (an SDK's block) is received into memory and written by a blocking thread in one go,
/// over a recycled file from the store's pool when there is one; a larger one is streamed to
/// a new file as it comes.
pub async fn body_to_file(
    body: Incoming,
    path: &Path,
    store: &std::sync::Arc<crate::blob::Store>,
) -> Result<u64> {
    use hyper::body::Body as _;
    const IN_MEMORY: u64 = crate::blob::pool::MAX_FILE;
    if body.size_hint().upper().is_some_and(|n| n <= IN_MEMORY) {
        let data = body_bytes(body, IN_MEMORY as usize).await?;
        let path = path.to_path_buf();
        let store = store.clone();
        return tokio::task::spawn_blocking(move || {
            if let Some(d) = path.parent() {
                crate::blob::store::ensure_dir(d)?;
            }
            store.pool.write(&path, &data)?;
            Ok(data.len() as u64)
        })
        .await
        .map_err(BlobError::internal)?;
    }
    if let Some(d) = path.parent() {
        crate::blob::store::ensure_dir(d)?;
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut n = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(BlobError::invalid_input(format!("reading the body: {e}")));
            }
        };
        if let Ok(d) = frame.into_data() {
            f.write_all(&d)?;
            n += d.len() as u64;
        }
    }
    f.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn reads_fill_the_range_and_zeros_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(&read_at(&f, 10, 20).unwrap()[..], &data[10..30]);
        let tail = read_at(&f, 90, 30).unwrap();
        assert_eq!(&tail[..10], &data[90..]);
        assert_eq!(&tail[10..], &[0u8; 20]);
        assert!(read_at(&f, 500, 8).unwrap().iter().all(|b| *b == 0));
    }
}
