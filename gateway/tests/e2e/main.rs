//! End-to-end tests: a real `sluice` process, real upstream servers, real clients.
//! One test binary, so it links once.

mod support;

mod certs;

mod admin;
mod cli;
mod failures;
mod filters;
mod grpc;
mod hot_swap;
mod limits;
mod load;
mod plugin_cli;
mod plugin_metrics;
mod proxy;
mod raw_response;
mod reload;
mod tls;
mod tracing;
mod upstreams;
mod xds;
mod xds_cp;
mod xds_ecds;
