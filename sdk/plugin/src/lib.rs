//! `sluice-plugin`: a lean Rust SDK for proxy-wasm HTTP plugins.
//!
//! A plugin is two types: a [`RootContext`] (one per plugin configuration in each VM: it reads
//! the configuration, runs timers, and makes the HTTP contexts) and an [`HttpContext`] (one per
//! request), each also a [`Context`] (the answers to the callouts it sends). [`plugin!`] exports the proxy-wasm ABI 0.2.1 callbacks for them, so the module runs
//! in Sluice, Envoy or any other proxy-wasm host. [`host`] has the calls a plugin makes.
//!
//! ```no_run
//! use sluice_plugin::{host, Action, Context, HttpContext, MapType, RootContext};
//!
//! #[derive(Default)]
//! struct Root {
//!     value: std::rc::Rc<str>,
//! }
//!
//! impl Context for Root {}
//!
//! impl RootContext for Root {
//!     type Http = Stream;
//!
//!     fn on_configure(&mut self, _size: usize) -> bool {
//!         let config = host::plugin_configuration().ok().flatten().unwrap_or_default();
//!         self.value = String::from_utf8_lossy(&config).into();
//!         true
//!     }
//!
//!     fn create_http_context(&mut self, _id: u32) -> Stream {
//!         Stream { value: self.value.clone() }
//!     }
//! }
//!
//! struct Stream {
//!     value: std::rc::Rc<str>,
//! }
//!
//! impl Context for Stream {}
//!
//! impl HttpContext for Stream {
//!     fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
//!         let _ = host::add_header(MapType::ResponseHeaders, "x-hello", &self.value);
//!         Action::Continue
//!     }
//! }
//!
//! sluice_plugin::plugin!(Root, |_root_id| Root::default());
//! ```
//!
//! How it differs from the `proxy-wasm` crate: contexts are your own types, held by value and
//! reached by static dispatch (no `Box<dyn>` per request, a mask and a compare to find a context),
//! which makes the SDK's share of a request a few hundred instructions instead of a few
//! thousand (docs/plugins.md, "What a plugin costs"). It covers HTTP plugins, with http and gRPC
//! callouts; it has no TCP (network) filters: write those with the `proxy-wasm` crate, which
//! Sluice runs too.

pub mod contexts;
pub mod dispatch;
pub mod host;
pub mod pairs;
#[doc(hidden)]
pub mod single;

mod abi;
mod types;

pub use types::{Action, BufferType, LogLevel, MapType, MetricType, Status, StreamType};

/// What a root and a request context share: the answers to the callouts they send. A root or
/// request that sends none writes `impl Context for MyType {}`.
pub trait Context: 'static {
    /// The answer to an http callout this context sent ([`host::http_call`]); read it with
    /// [`host::http_call_response_headers`] and friends. No answer (a timeout, a reset) comes
    /// with zero headers and no body. A request context then resumes the request
    /// ([`host::resume_request`]) or answers it ([`host::send_response`]).
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body_size: usize,
        _trailers: usize,
    ) {
    }

    /// The answer to a unary gRPC call this context sent ([`host::grpc_call`]): `status` 0
    /// with the message ([`host::grpc_message`]), or the call's non-zero status and no message
    /// ([`host::grpc_status`] has its text).
    fn on_grpc_call_response(&mut self, _token: u32, _status: u32, _message_size: usize) {}

    /// A gRPC stream this context opened ([`host::grpc_stream`]) got its initial metadata
    /// ([`host::headers`] with [`MapType::GrpcInitialMetadata`]).
    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, _headers: usize) {}

    /// A message arrived on a gRPC stream ([`host::grpc_message`]).
    fn on_grpc_stream_message(&mut self, _token: u32, _message_size: usize) {}

    /// A gRPC stream's trailing metadata ([`MapType::GrpcTrailingMetadata`]).
    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, _trailers: usize) {}

    /// A gRPC stream ended with `status` ([`host::grpc_status`]).
    fn on_grpc_stream_close(&mut self, _token: u32, _status: u32) {}
}

/// A plugin's root context: one per plugin configuration in each VM, alive as long as the VM.
pub trait RootContext: Context {
    /// The per-request context this root makes.
    type Http: HttpContext;

    /// The VM started; `vm_configuration_size` bytes of [`host::vm_configuration`] are there.
    /// `false` fails the VM.
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    /// The plugin's configuration arrived ([`host::plugin_configuration`]): at start and on each
    /// change. `false` rejects it (Sluice then keeps the previous plugin running).
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        true
    }

    /// The timer set by [`host::set_tick_period`] fired.
    fn on_tick(&mut self) {}

    /// An item arrived in a queue this VM registered ([`host::register_queue`]).
    fn on_queue_ready(&mut self, _queue_id: u32) {}

    /// A new request: its context.
    fn create_http_context(&mut self, context_id: u32) -> Self::Http;

    /// The root's log callback (when the host logs the root, rarely).
    fn on_log(&mut self) {}

    /// The VM is shutting down; `true` when the root has nothing left to finish, `false` to
    /// finish first and then call [`host::done`].
    fn on_done(&mut self) -> bool {
        true
    }
}

/// One request's context. Every callback has a default that lets the request through unchanged.
///
/// Contexts are held by value in a table with twice as many slots as live requests, and an
/// empty slot takes the type's size too: keep the type small (shared configuration behind an
/// `Rc`), or box a large part of it.
pub trait HttpContext: Context {
    /// The request's headers arrived ([`host::header`] / [`host::headers`] with
    /// [`MapType::RequestHeaders`]); `end_of_stream` when the request has no body.
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A chunk of the request body ([`host::buffer`] with [`BufferType::HttpRequestBody`]).
    /// [`Action::Pause`] makes the host buffer the body and call again, with all of it, at its
    /// end.
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// The request's trailers.
    fn on_request_trailers(&mut self, _trailers: usize) -> Action {
        Action::Continue
    }

    /// The response's headers.
    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A chunk of the response body (see [`HttpContext::on_request_body`]).
    fn on_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// The response's trailers.
    fn on_response_trailers(&mut self, _trailers: usize) -> Action {
        Action::Continue
    }

    /// The request is complete: its access log entry is being written; properties such as
    /// `response.code` are readable.
    fn on_log(&mut self) {}

    /// The request ended; `true` lets the host delete the context now.
    fn on_done(&mut self) -> bool {
        true
    }
}

/// `proxy_on_memory_allocate`: memory for what the host returns to the plugin, which the
/// [`host`] calls take back as a `Vec<u8>` of exactly `size` bytes.
#[doc(hidden)]
pub fn allocate(size: usize) -> *mut u8 {
    let mut buf = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(size));
    buf.as_mut_ptr()
}

/// Exports the proxy-wasm ABI 0.2.1 for a plugin: `plugin!(RootType, |root_context_id| make_root)`.
/// Use it once, in the plugin crate's `lib.rs` (crate type `cdylib`). Every root context (one
/// per use of the plugin in a chain) comes from the same closure; one that must tell uses apart
/// reads `host::property(&["plugin_root_id"])` in `on_configure`.
#[macro_export]
macro_rules! plugin {
    ($root:ty, $new_root:expr) => {
        const _: () = {
            use $crate::dispatch::Dispatcher;

            $crate::single_thread_static! {
                static DISPATCHER: Dispatcher<$root> = Dispatcher::new();
            }

            #[cfg(target_os = "wasi")]
            extern "C" {
                fn __wasm_call_ctors();
            }

            /// Makes the module a WASI reactor: the host calls this once, before any callback,
            /// and the linker does not wrap every export in constructor and destructor calls,
            /// as it does for a module without it.
            #[no_mangle]
            pub extern "C" fn _initialize() {
                #[cfg(target_os = "wasi")]
                // SAFETY: the linker's constructor list, run once, before anything else.
                unsafe {
                    __wasm_call_ctors()
                };
            }

            #[no_mangle]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[no_mangle]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                $crate::allocate(size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
                DISPATCHER.with(|d| d.on_context_create(id, parent, $new_root))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_vm_start(root: u32, size: usize) -> u32 {
                DISPATCHER.with(|d| d.on_vm_start(root, size))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> u32 {
                DISPATCHER.with(|d| d.on_configure(root, size))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_tick(root: u32) {
                DISPATCHER.with(|d| d.on_tick(root))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_queue_ready(root: u32, queue: u32) {
                DISPATCHER.with(|d| d.on_queue_ready(root, queue))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_headers(id: u32, headers: usize, eos: u32) -> u32 {
                DISPATCHER.with(|d| d.on_request_headers(id, headers, eos))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_body(id: u32, size: usize, eos: u32) -> u32 {
                DISPATCHER.with(|d| d.on_request_body(id, size, eos))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_trailers(id: u32, trailers: usize) -> u32 {
                DISPATCHER.with(|d| d.on_request_trailers(id, trailers))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_headers(id: u32, headers: usize, eos: u32) -> u32 {
                DISPATCHER.with(|d| d.on_response_headers(id, headers, eos))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_body(id: u32, size: usize, eos: u32) -> u32 {
                DISPATCHER.with(|d| d.on_response_body(id, size, eos))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_trailers(id: u32, trailers: usize) -> u32 {
                DISPATCHER.with(|d| d.on_response_trailers(id, trailers))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_http_call_response(
                id: u32,
                token: u32,
                headers: usize,
                body: usize,
                trailers: usize,
            ) {
                DISPATCHER.with(|d| d.on_http_call_response(id, token, headers, body, trailers))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_receive_initial_metadata(
                _id: u32,
                token: u32,
                headers: usize,
            ) {
                DISPATCHER.with(|d| d.on_grpc_initial_metadata(token, headers))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_receive(_id: u32, token: u32, size: usize) {
                DISPATCHER.with(|d| d.on_grpc_receive(token, size))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(
                _id: u32,
                token: u32,
                trailers: usize,
            ) {
                DISPATCHER.with(|d| d.on_grpc_trailing_metadata(token, trailers))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_close(_id: u32, token: u32, status: u32) {
                DISPATCHER.with(|d| d.on_grpc_close(token, status))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_log(id: u32) {
                DISPATCHER.with(|d| d.on_log(id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_done(id: u32) -> u32 {
                DISPATCHER.with(|d| d.on_done(id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_delete(id: u32) {
                DISPATCHER.with(|d| d.on_delete(id))
            }
        };
    };
}
