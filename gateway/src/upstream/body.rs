//! The body of an upstream response: read by Sluice's HTTP/1.1 client, or by hyper's HTTP/2
//! client. One concrete type, so the request path boxes it at most once.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::BoxError;
use crate::h1::{ClientBody, Conn};

/// An upstream response body.
pub enum UpstreamBody {
    /// From an HTTP/1.1 upstream.
    H1(ClientBody),
    /// From an HTTP/2 upstream.
    H2(Incoming),
}

impl UpstreamBody {
    /// After a 101 answer from an HTTP/1.1 upstream: its connection, for the upgraded protocol.
    pub fn take_upgraded(&mut self) -> Option<Conn> {
        match self {
            UpstreamBody::H1(b) => b.take_upgraded(),
            UpstreamBody::H2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}
