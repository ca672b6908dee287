//! Sluice's own HTTP/1.1 for the proxy path: the downstream connection (`server`, `server_body`),
//! the upstream exchange (`client`, `client_body`), and what they are built from — chunked
//! coding, header fields between httparse and `http` types, the `Date` header, buffered socket
//! reads and queued vectored writes.
//!
//! Why not hyper here: hyper's client runs each upstream connection as a task of its own and
//! passes every request, response and body chunk to it through channels, and its server moves
//! each request's future into its dispatcher and encodes through generic layers; for a proxy
//! that is more than the parsing itself. Here the whole exchange runs in the downstream
//! connection's task: a proxied request is one read and one write on each socket and no task
//! hand-off. Parsing is httparse (what hyper uses). HTTP/2, on either side, stays on hyper.

pub mod chunked;
pub mod client;
pub mod client_body;
pub mod date;
pub mod head;
pub mod io;
pub mod raw_fields;
pub mod server;
pub mod server_body;

pub use client::{Conn, SendError};
pub use client_body::ClientBody;
pub use server::{OnUpgrade, Settings, Upgraded};
pub use server_body::ServerBody;
