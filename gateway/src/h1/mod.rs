//! Sluice's own HTTP/1.1 codec for the proxy path: the upstream side of an exchange (`client`,
//! `client_body`), and what it is built from — chunked coding, header fields between httparse
//! and `http` types, buffered socket reads and queued vectored writes.
//!
//! Why not hyper's client here: hyper runs each upstream connection as a task of its own and
//! passes every request, response and body chunk to it through channels, which costs a proxy
//! more than the parsing itself. With the exchange driven from the request's task, a proxied
//! request is one write and one read on the upstream socket and no task hand-off. Parsing is
//! httparse (what hyper uses); HTTP/2 upstreams stay on hyper.

pub mod chunked;
pub mod client;
pub mod client_body;
pub mod head;
pub mod io;

pub use client::{Conn, SendError};
pub use client_body::ClientBody;
