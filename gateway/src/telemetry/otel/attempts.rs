//! The upstream tries of a traced request. The upstream module retries internally; around the
//! send of a sampled request the proxy opens a task-local list, and each try appends to it. For
//! a request that is not traced the list does not exist and a try checks only that.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use crate::upstream::UpstreamError;

/// One try: which endpoint, when, and how it ended.
pub struct Attempt {
    pub endpoint: SocketAddr,
    pub start: Instant,
    pub end: Instant,
    /// The response status, or the failure kind.
    pub result: Result<u16, String>,
}

tokio::task_local! {
    static ATTEMPTS: RefCell<Vec<Attempt>>;
}

/// Run `f` collecting the tries made inside it.
pub async fn collect<F: Future>(f: F) -> (F::Output, Vec<Attempt>) {
    ATTEMPTS
        .scope(RefCell::new(Vec::new()), async {
            let out = f.await;
            let tries = ATTEMPTS.with(|a| a.take());
            (out, tries)
        })
        .await
}

/// The start of a try when tries are being collected (the request is traced).
pub fn start() -> Option<Instant> {
    ATTEMPTS.try_with(|_| Instant::now()).ok()
}

/// Record the try that began at `start` (from [`start`]) on `endpoint`.
pub fn record<T>(
    start: Instant,
    endpoint: SocketAddr,
    outcome: &Result<http::Response<T>, UpstreamError>,
) {
    let result = match outcome {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{:?}", e.kind)),
    };
    let _ = ATTEMPTS.try_with(|a| {
        a.borrow_mut().push(Attempt {
            endpoint,
            start,
            end: Instant::now(),
            result,
        })
    });
}
