//! Upstream tests against real sockets: one test binary (links once) with a module per area.

mod upstream_all {
    pub mod balancing;
    pub mod dns;
    pub mod errors;
    pub mod h2;
    pub mod health;
    pub mod pooling;
    pub mod retries;
    pub mod support;
}
