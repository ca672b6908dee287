//! End-to-end tests: a real `sluice` process, real upstream servers, real clients.
//! One test binary, so it links once.

mod support;

mod admin;
mod cli;
mod failures;
mod filters;
mod limits;
mod load;
mod proxy;
mod reload;
mod upstreams;
mod xds;
