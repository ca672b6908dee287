//! The Sluice proxy-wasm host: runs plugins written for Envoy (Rust, AssemblyScript, Go and C++
//! SDKs; ABI 0.1.0, 0.2.0 and 0.2.1) on wasmtime, each VM bounded in memory and time.
//!
//! Usable without the gateway: compile a [`PluginModule`], create a [`Vm`] per thread, create a
//! root context, then a context per stream, and call the phases with a [`StreamHost`] that gives
//! host calls the stream's headers, bodies and properties.
//!
//! Unsafe code is denied except in two audited places: the stream pointer that host calls use
//! during a callback (`state.rs`) and loading precompiled modules from the disk cache (`cache.rs`).

#![deny(unsafe_code)]

pub mod abi;
pub mod cache;
pub mod engine;
pub mod failure;
mod host;
pub mod limits;
mod memory;
pub mod merged;
pub mod metrics;
pub mod pairs;
pub mod plugin;
pub mod property;
pub mod shared;
pub mod state;
pub mod vm;

pub use abi::{AbiVersion, Action, BufferType, MapType, Status};
pub use failure::{failure_counts, Failure, FailureKind};
pub use limits::Limits;
pub use plugin::{PluginInfo, PluginModule};
pub use property::Prop;
pub use state::{
    Callout, CalloutKind, CalloutResponse, ForeignFunctions, GrpcEvent, GrpcSend, IdMap, IdSet,
    LocalReply, NumMap, Signals, StreamHost,
};
pub use vm::{KnownCluster, Vm, VmEnv};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("invalid wasm module: {0}")]
    Compile(String),
    #[error("not a usable proxy-wasm module: {0}")]
    Abi(String),
    #[error("cannot link the module: {0}")]
    Link(String),
}
