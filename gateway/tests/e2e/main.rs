//! End-to-end tests: a real `sluice` process, real upstream servers, real clients.
//! One test binary, so it links once.

mod support;

mod proxy;
mod failures;
mod limits;
