//! From the host's callbacks to the plugin's contexts. One [`Dispatcher`] per plugin module (the
//! [`crate::plugin!`] macro declares it): roots in a short list (a module usually has one), HTTP
//! contexts by value in a direct-mapped table ([`Contexts`]). Nothing is allocated per stream,
//! and every call is static: the plugin's context types are known at compile time.

use crate::contexts::{Contexts, IdMap};
use crate::{Action, HttpContext, RootContext};
use std::cell::{Cell, RefCell};
use std::hash::BuildHasherDefault;

thread_local! {
    /// The context whose callback is running: callouts it sends answer to it.
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
    /// Callout token -> the context that sent it.
    static CALLOUTS: RefCell<IdMap<u32>> = const { RefCell::new(IdMap::with_hasher(BuildHasherDefault::new())) };
    /// gRPC call or stream token -> the context that opened it, and whether it is a stream.
    static GRPC: RefCell<IdMap<(u32, bool)>> = const { RefCell::new(IdMap::with_hasher(BuildHasherDefault::new())) };
}

/// Records that the running context sent callout `token` ([`crate::host::http_call`]).
pub(crate) fn callout_sent(token: u32) {
    let context = ACTIVE.with(Cell::get);
    CALLOUTS.with(|c| c.borrow_mut().insert(token, context));
}

/// Records that the running context opened gRPC call or stream `token`.
pub(crate) fn grpc_sent(token: u32, stream: bool) {
    let context = ACTIVE.with(Cell::get);
    GRPC.with(|g| g.borrow_mut().insert(token, (context, stream)));
}

/// Forgets a cancelled gRPC token.
pub(crate) fn grpc_forget(token: u32) {
    GRPC.with(|g| g.borrow_mut().remove(&token));
}

/// The context that opened gRPC `token` and whether it is a stream; `last` forgets it.
fn grpc_owner(token: u32, last: bool) -> Option<(u32, bool)> {
    GRPC.with(|g| {
        let mut g = g.borrow_mut();
        if last {
            g.remove(&token)
        } else {
            g.get(&token).copied()
        }
    })
}

/// One gRPC event, for [`Dispatcher::grpc_event`].
#[derive(Clone, Copy)]
enum GrpcEvent {
    InitialMetadata(usize),
    Message(usize),
    TrailingMetadata(usize),
    Close(u32),
}

/// The contexts of one plugin module, and the host callbacks that reach them.
pub struct Dispatcher<R: RootContext> {
    roots: RefCell<Vec<(u32, R)>>,
    streams: RefCell<Contexts<R::Http>>,
}

impl<R: RootContext> Default for Dispatcher<R> {
    fn default() -> Self {
        Self::new()
    }
}

fn flag(b: bool) -> u32 {
    u32::from(b)
}

impl<R: RootContext> Dispatcher<R> {
    /// An empty dispatcher.
    pub const fn new() -> Self {
        Dispatcher {
            roots: RefCell::new(Vec::new()),
            streams: RefCell::new(Contexts::new()),
        }
    }

    #[inline(always)]
    fn with_root<T>(&self, id: u32, default: T, f: impl FnOnce(&mut R) -> T) -> T {
        let mut roots = self.roots.borrow_mut();
        match roots.iter_mut().find(|(rid, _)| *rid == id) {
            Some((_, root)) => {
                ACTIVE.with(|a| a.set(id));
                f(root)
            }
            None => default,
        }
    }

    #[inline(always)]
    fn with_stream<T>(&self, id: u32, default: T, f: impl FnOnce(&mut R::Http) -> T) -> T {
        let mut streams = self.streams.borrow_mut();
        match streams.get_mut(id) {
            Some(stream) => {
                ACTIVE.with(|a| a.set(id));
                f(stream)
            }
            None => default,
        }
    }

    /// `proxy_on_context_create`: a root context (`parent` 0) from `new_root`, or an HTTP
    /// context from its root. A stream whose root does not exist is not created (the plugin
    /// logs an error); its callbacks then do nothing.
    pub fn on_context_create(&self, id: u32, parent: u32, new_root: impl FnOnce(u32) -> R) {
        if parent == 0 {
            let root = new_root(id);
            self.roots.borrow_mut().push((id, root));
            return;
        }
        match self.with_root(parent, None, |root| Some(root.create_http_context(id))) {
            Some(stream) => {
                self.streams.borrow_mut().insert(id, stream);
            }
            None => crate::host::log(
                crate::LogLevel::Error,
                &format!("sluice-plugin: context {id} names root context {parent}, which does not exist; its callbacks will do nothing"),
            ),
        }
    }

    /// `proxy_on_vm_start`.
    pub fn on_vm_start(&self, root: u32, size: usize) -> u32 {
        flag(self.with_root(root, false, |r| r.on_vm_start(size)))
    }

    /// `proxy_on_configure`.
    pub fn on_configure(&self, root: u32, size: usize) -> u32 {
        flag(self.with_root(root, false, |r| r.on_configure(size)))
    }

    /// `proxy_on_tick`.
    pub fn on_tick(&self, root: u32) {
        self.with_root(root, (), |r| r.on_tick())
    }

    /// `proxy_on_queue_ready`.
    pub fn on_queue_ready(&self, root: u32, queue: u32) {
        self.with_root(root, (), |r| r.on_queue_ready(queue))
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&self, id: u32, headers: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| {
            s.on_request_headers(headers, eos != 0)
        }) as u32
    }

    /// `proxy_on_request_body`.
    pub fn on_request_body(&self, id: u32, size: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_request_body(size, eos != 0)) as u32
    }

    /// `proxy_on_request_trailers`.
    pub fn on_request_trailers(&self, id: u32, trailers: usize) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_request_trailers(trailers)) as u32
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers(&self, id: u32, headers: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| {
            s.on_response_headers(headers, eos != 0)
        }) as u32
    }

    /// `proxy_on_response_body`.
    pub fn on_response_body(&self, id: u32, size: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_response_body(size, eos != 0)) as u32
    }

    /// `proxy_on_response_trailers`.
    pub fn on_response_trailers(&self, id: u32, trailers: usize) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_response_trailers(trailers)) as u32
    }

    /// `proxy_on_http_call_response`: to the context that sent the callout (by its token), else
    /// to the context the host names.
    pub fn on_http_call_response(
        &self,
        id: u32,
        token: u32,
        headers: usize,
        body: usize,
        trailers: usize,
    ) {
        let sender = CALLOUTS
            .with(|c| c.borrow_mut().remove(&token))
            .unwrap_or(id);
        let is_stream = self.streams.borrow_mut().contains(sender);
        if is_stream {
            self.with_stream(sender, (), |s| {
                s.on_http_call_response(token, headers, body, trailers)
            })
        } else {
            self.with_root(sender, (), |r| {
                r.on_http_call_response(token, headers, body, trailers)
            })
        }
    }

    /// Routes a gRPC event to the context that opened the call or stream. A unary call's answer
    /// is its message (status 0) or its close (the status); the metadata around it is not
    /// delivered.
    fn grpc_event(&self, token: u32, event: GrpcEvent) {
        let last = matches!(event, GrpcEvent::Close(_))
            || matches!(
                (event, grpc_owner(token, false)),
                (GrpcEvent::Message(_), Some((_, false)))
            );
        let Some((owner, stream)) = grpc_owner(token, last) else {
            return;
        };
        // The same calls on a root or an HTTP context (two traits, the same method names).
        macro_rules! deliver {
            ($target:expr) => {
                match (stream, event) {
                    (false, GrpcEvent::Message(size)) => {
                        $target.on_grpc_call_response(token, 0, size)
                    }
                    (false, GrpcEvent::Close(status)) => {
                        $target.on_grpc_call_response(token, status, 0)
                    }
                    (false, _) => {}
                    (true, GrpcEvent::InitialMetadata(n)) => {
                        $target.on_grpc_stream_initial_metadata(token, n)
                    }
                    (true, GrpcEvent::Message(size)) => $target.on_grpc_stream_message(token, size),
                    (true, GrpcEvent::TrailingMetadata(n)) => {
                        $target.on_grpc_stream_trailing_metadata(token, n)
                    }
                    (true, GrpcEvent::Close(status)) => $target.on_grpc_stream_close(token, status),
                }
            };
        }
        let is_stream_context = self.streams.borrow_mut().contains(owner);
        if is_stream_context {
            self.with_stream(owner, (), |s| deliver!(s))
        } else {
            self.with_root(owner, (), |r| deliver!(r))
        }
    }

    /// `proxy_on_grpc_receive_initial_metadata`.
    pub fn on_grpc_initial_metadata(&self, token: u32, headers: usize) {
        self.grpc_event(token, GrpcEvent::InitialMetadata(headers))
    }

    /// `proxy_on_grpc_receive`.
    pub fn on_grpc_receive(&self, token: u32, size: usize) {
        self.grpc_event(token, GrpcEvent::Message(size))
    }

    /// `proxy_on_grpc_receive_trailing_metadata`.
    pub fn on_grpc_trailing_metadata(&self, token: u32, trailers: usize) {
        self.grpc_event(token, GrpcEvent::TrailingMetadata(trailers))
    }

    /// `proxy_on_grpc_close`.
    pub fn on_grpc_close(&self, token: u32, status: u32) {
        self.grpc_event(token, GrpcEvent::Close(status))
    }

    /// `proxy_on_log`.
    pub fn on_log(&self, id: u32) {
        if self.with_stream(id, false, |s| {
            s.on_log();
            true
        }) {
            return;
        }
        self.with_root(id, (), |r| r.on_log())
    }

    /// `proxy_on_done`: whether the context is done now (a root may ask for time to finish,
    /// then calls `proxy_done`).
    pub fn on_done(&self, id: u32) -> u32 {
        if let Some(done) = self.with_stream(id, None, |s| Some(s.on_done())) {
            return flag(done);
        }
        flag(self.with_root(id, true, |r| r.on_done()))
    }

    /// `proxy_on_delete`: the context is gone; its value is dropped.
    pub fn on_delete(&self, id: u32) {
        // Taken out of the map before the drop, so a Drop impl runs with no borrow held.
        let stream = self.streams.borrow_mut().remove(id);
        if stream.is_some() {
            drop(stream);
            return;
        }
        let root = {
            let mut roots = self.roots.borrow_mut();
            roots
                .iter()
                .position(|(rid, _)| *rid == id)
                .map(|i| roots.remove(i))
        };
        drop(root);
    }
}
