//! HTTP plumbing of the blob service: the response body type, request bodies to memory or to
//! a file, header helpers, and the cloud's error rendering.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{HeaderMap, Response, StatusCode};

use super::error::{BlobError, Result};
use super::store::{self, HttpProps};

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

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `x-ms-meta-*` request headers, named as in `spelt` (the names as sent; hyper's are
/// lower-case). The cloud keeps a name's case but compares names ignoring it: the same name
/// twice is 400.
pub fn metadata(h: &HeaderMap, spelt: &[String]) -> Result<BTreeMap<String, String>> {
    let invalid = |why: &str| {
        BlobError::new(
            StatusCode::BAD_REQUEST,
            "InvalidMetadata",
            format!("The metadata specified is invalid. {why}"),
        )
    };
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let Some(lower) = k.as_str().strip_prefix("x-ms-meta-") else {
            continue;
        };
        let ok = lower
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && lower.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid("It has characters that are not permitted."));
        }
        if h.get_all(k).iter().count() > 1 {
            return Err(invalid("A name is given more than once."));
        }
        let name = spelt
            .iter()
            .find(|s| s.eq_ignore_ascii_case(lower))
            .map_or(lower, String::as_str);
        out.insert(name.to_string(), v.to_str().unwrap_or_default().to_string());
    }
    Ok(out)
}

/// The blob's HTTP properties from `x-ms-blob-*` headers (`Content-Type` as a fallback where the
/// cloud takes it, on Put Blob). None when the request sets none of them.
pub fn http_props(h: &HeaderMap, content_type_fallback: bool) -> Option<HttpProps> {
    let g = |n: &str| header(h, n).map(String::from);
    let p = HttpProps {
        content_type: g("x-ms-blob-content-type")
            .or_else(|| content_type_fallback.then(|| g("content-type")).flatten()),
        content_encoding: g("x-ms-blob-content-encoding").or_else(|| {
            content_type_fallback
                .then(|| g("content-encoding"))
                .flatten()
        }),
        content_language: g("x-ms-blob-content-language"),
        content_md5: g("x-ms-blob-content-md5"),
        cache_control: g("x-ms-blob-cache-control"),
        content_disposition: g("x-ms-blob-content-disposition"),
    };
    (p != HttpProps::default()).then_some(p)
}

/// `bytes=a-b` / `bytes=a-` from `x-ms-range` (preferred) or `Range`; the header name too.
pub fn range(h: &HeaderMap) -> Result<Option<(&'static str, u64, Option<u64>)>> {
    let (name, v) = match (header(h, "x-ms-range"), header(h, "range")) {
        (Some(v), _) => ("x-ms-range", v),
        (None, Some(v)) => ("Range", v),
        (None, None) => return Ok(None),
    };
    let bad = || BlobError::invalid_header(name, v);
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse::<u64>().map_err(|_| bad())?),
    };
    if b.is_some_and(|b| b < a) {
        return Err(bad());
    }
    Ok(Some((name, a, b)))
}

/// Renders an error the way the cloud does.
pub fn error_response(e: &BlobError, request_id: &str, head: bool) -> Response<Body> {
    let mut w = super::xml::Writer::new();
    w.open("Error").elem("Code", e.code).elem(
        "Message",
        &format!(
            "{}\nRequestId:{request_id}\nTime:{}",
            e.message,
            super::store::snapshot_time(store::now_ns())
        ),
    );
    for (k, v) in &e.details {
        w.elem(k, v);
    }
    w.close("Error");
    let body = w.finish();
    let mut b = Response::builder()
        .status(e.status)
        .header("x-ms-error-code", e.code)
        .header("content-type", "application/xml");
    if e.status == StatusCode::UNAUTHORIZED {
        b = b.header("www-authenticate", "SharedKey realm=\"vmnode\"");
    }
    let no_body = head || e.status == StatusCode::NOT_MODIFIED;
    b = b.header("content-length", if no_body { 0 } else { body.len() });
    b.body(if no_body {
        Body::empty()
    } else {
        Body::from(body)
    })
    .unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

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

    #[test]
    fn metadata_takes_the_spelling_sent_and_refuses_a_name_twice() {
        let h = headers(&[("x-ms-meta-MyKey", "1"), ("x-ms-meta-b", "2")]);
        let md = metadata(&h, &["MyKey".into(), "b".into()]).unwrap();
        assert_eq!(
            md.into_iter().collect::<Vec<_>>(),
            [
                ("MyKey".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        // Without the wire's spellings: hyper's lower case.
        let md = metadata(&h, &[]).unwrap();
        assert!(md.contains_key("mykey"));
        let dup = headers(&[("x-ms-meta-Key", "1"), ("x-ms-meta-KEY", "2")]);
        let e = metadata(&dup, &["Key".into(), "KEY".into()]).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "InvalidMetadata"));
        let bad = headers(&[("x-ms-meta-1abc", "1")]);
        assert_eq!(metadata(&bad, &[]).unwrap_err().code, "InvalidMetadata");
    }
}
