//! The body type that flows through the proxy: a boxed, streaming body (never buffered whole
//! unless a filter asks for it). Not `Send`: a stream lives on one worker, and body filters hold
//! per-worker state (wasm contexts).

use std::pin::Pin;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies inside Sluice.
pub type ProxyBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>;

pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Box::pin(Full::new(data.into()).map_err(|never| match never {}))
}

pub fn empty() -> ProxyBody {
    Box::pin(Empty::<Bytes>::new().map_err(|never| match never {}))
}

/// Box any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(body.map_err(Into::into))
}
