//! Runs a chain of filters over an exchange.

use std::sync::Arc;

use super::HttpFilter;

/// One filter in a chain.
#[derive(Clone)]
pub struct ChainEntry {
    pub filter: Arc<dyn HttpFilter>,
}

/// The listener chain followed by the route chain.
#[derive(Clone, Default)]
pub struct Chain {
    pub entries: Vec<ChainEntry>,
}
