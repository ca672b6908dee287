//! End-to-end tests: a real `sluice` process, real upstream servers, real clients.
//! One test binary, so it links once.

mod support;

mod certs;

mod admin;
mod cli;
mod failures;
mod filters;
mod grpc;
mod limits;
mod load;
mod proxy;
mod reload;
mod tls;
mod upstreams;
