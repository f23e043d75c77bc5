//! What every listener of the daemon shares (the management API on TCP and on its unix socket,
//! the blob service): an accept loop that backs off when the host is out of descriptors or
//! memory, and a request whose handler panics answered with a 500 instead of ending the process.
//!
//! One node runs every API, the blob service, DHCP and DNS in one process: anything a client can
//! make happen in one request must stay in that request.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

/// The first pause after a failed accept; doubled on each further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause: a listener is tried at least once a second while the host recovers.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on one listener, pausing after a failure. An accept that fails for want of
/// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) leaves the connection in the backlog,
/// so the listener stays readable and a loop that retries at once spins a core until the host
/// recovers; here it waits 10 ms, doubling to 1 s, back to 10 ms after the next success, and logs
/// once per run of failures. It never gives up: the listener is the node's only way in.
pub struct Acceptor {
    /// Which listener, for the log.
    what: &'static str,
    delay: Option<Duration>,
    failures: u64,
}

impl Acceptor {
    pub fn new(what: &'static str) -> Self {
        Acceptor {
            what,
            delay: None,
            failures: 0,
        }
    }

    /// The next connection `accept` gives, however many failures it takes.
    pub async fn next<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(conn) => {
                    self.succeeded();
                    return conn;
                }
                Err(e) => tokio::time::sleep(self.failed(&e)).await,
            }
        }
    }

    /// How long to wait after this failure.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failures += 1;
        let delay = match self.delay {
            None => {
                tracing::warn!(listener = self.what, error = %e,
                    "accept failed; backing off (10 ms doubling to 1 s) until it succeeds");
                BACKOFF_MIN
            }
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(delay);
        delay
    }

    fn succeeded(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!(
                listener = self.what,
                failures = self.failures,
                "accepting again"
            );
            self.failures = 0;
        }
    }
}

/// A request handler panicked: its message, for the 500 the caller answers in its own shape.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(pub String);

/// Runs one request's service future; a panic in it is logged (method, path, panic message) and
/// returned as [`Panicked`] for the caller to answer in its own error shape. What a request
/// touches is its own or behind locks a panic cannot wedge (tokio's do not poison; every std
/// `Mutex` of the crate is taken with `unwrap_or_else(PoisonError::into_inner)`), so the daemon
/// goes on serving.
pub async fn unwinding<F: Future>(
    method: &hyper::Method,
    path: &str,
    fut: F,
) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|p| {
        let message = panic_message(p.as_ref());
        tracing::error!(%method, %path, panic = %message, "request handler panicked; answered 500");
        Panicked(message)
    })
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets_on_success() {
        let mut a = Acceptor::new("test");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let got: Vec<u64> = (0..10).map(|_| a.failed(&e).as_millis() as u64).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        a.succeeded();
        assert_eq!(a.failed(&e), BACKOFF_MIN);
    }

    #[tokio::test]
    async fn a_panicking_future_is_an_error_with_its_message() {
        let m = hyper::Method::GET;
        let r = unwinding(&m, "/x", async { panic!("boom {}", 7) }).await;
        assert_eq!(r, Err::<(), _>(Panicked("boom 7".into())));
        assert_eq!(unwinding(&m, "/x", async { 5 }).await, Ok(5));
    }
}
