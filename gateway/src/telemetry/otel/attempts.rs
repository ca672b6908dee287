//! The upstream tries of a traced request. The upstream module retries internally; the proxy
//! hands it a [`Tries`] log (in `SendOptions`) for a sampled request, and each try appends to it.
//! For a request that is not traced there is no log and a try checks only that.
//!
//! The log lives on the request path's own stack frame: the first try is kept inline, only
//! retries allocate.

use std::cell::RefCell;
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

/// The tries of one upstream request, in order.
#[derive(Default)]
pub struct Tries(RefCell<List>);

#[derive(Default)]
struct List {
    first: Option<Attempt>,
    rest: Vec<Attempt>,
}

impl Tries {
    /// Record the try that began at `start` on `endpoint`, ending now.
    pub fn record<T>(
        &self,
        start: Instant,
        endpoint: SocketAddr,
        outcome: &Result<Box<http::Response<T>>, UpstreamError>,
    ) {
        let result = match outcome {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(format!("{:?}", e.kind)),
        };
        let a = Attempt {
            endpoint,
            start,
            end: Instant::now(),
            result,
        };
        let mut list = self.0.borrow_mut();
        if list.first.is_none() {
            list.first = Some(a);
        } else {
            list.rest.push(a);
        }
    }

    /// How many tries were made.
    pub fn len(&self) -> usize {
        let list = self.0.borrow();
        usize::from(list.first.is_some()) + list.rest.len()
    }

    /// Whether no try was made (no endpoint could be picked).
    pub fn is_empty(&self) -> bool {
        self.0.borrow().first.is_none()
    }

    /// The endpoint and end of the last try.
    pub fn last(&self) -> Option<(SocketAddr, Instant)> {
        let list = self.0.borrow();
        list.rest
            .last()
            .or(list.first.as_ref())
            .map(|a| (a.endpoint, a.end))
    }

    /// The tries, in order.
    /// When the first try started.
    pub fn first_start(&self) -> Option<Instant> {
        self.0.borrow().first.as_ref().map(|a| a.start)
    }

    pub fn into_vec(self) -> Vec<Attempt> {
        let List { first, mut rest } = self.0.into_inner();
        if let Some(f) = first {
            rest.insert(0, f);
        }
        rest
    }
}
