//! From the host's callbacks to the plugin's contexts. One [`Dispatcher`] per plugin module (the
//! [`crate::plugin!`] macro declares it): roots in a short list (a module usually has one), HTTP
//! contexts by value in a direct-mapped table ([`Contexts`]). Nothing is allocated per stream,
//! and every call is static: the plugin's context types are known at compile time.

use crate::contexts::{Contexts, IdMap};
use crate::{Action, Context, HttpContext, RootContext};
use std::cell::{Cell, RefCell};
use std::hash::BuildHasherDefault;

crate::single_thread_static! {
    /// The context whose callback is running: callouts it sends answer to it.
    static ACTIVE: Cell<u32> = Cell::new(0);
    /// Callout token -> the context that sent it.
    static CALLOUTS: RefCell<IdMap<u32>> = RefCell::new(IdMap::with_hasher(BuildHasherDefault::new()));
    /// gRPC call or stream token -> the context that opened it, and whether it is a stream.
    static GRPC: RefCell<IdMap<(u32, bool)>> = RefCell::new(IdMap::with_hasher(BuildHasherDefault::new()));
    /// Whether either map may hold an entry: a deleted context looks in them only then, so
    /// that a plugin without callouts does not pay for the maps on every request.
    static MAYBE_PENDING: Cell<bool> = Cell::new(false);
}

/// Records that the running context sent callout `token` ([`crate::host::http_call`]).
pub(crate) fn callout_sent(token: u32) {
    let context = ACTIVE.with(Cell::get);
    CALLOUTS.with(|c| c.borrow_mut().insert(token, context));
    MAYBE_PENDING.with(|p| p.set(true));
}

/// Records that the running context opened gRPC call or stream `token`.
pub(crate) fn grpc_sent(token: u32, stream: bool) {
    let context = ACTIVE.with(Cell::get);
    GRPC.with(|g| g.borrow_mut().insert(token, (context, stream)));
    MAYBE_PENDING.with(|p| p.set(true));
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

/// Forgets the callouts and gRPC calls context `id` still waits for: the host answers none of
/// them once the context is gone. Nothing to scan while none is pending.
#[inline(always)]
fn forget_calls_of(id: u32) {
    if MAYBE_PENDING.with(Cell::get) {
        forget_pending_calls_of(id);
    }
}

// Out of line, as every rare path of a callback: wasm compilers save registers for a
// function's whole body, so the maps' code inlined would cost each request.
#[cold]
#[inline(never)]
fn forget_pending_calls_of(id: u32) {
    let left = CALLOUTS.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|_, owner| *owner != id);
        c.len()
    }) + GRPC.with(|g| {
        let mut g = g.borrow_mut();
        g.retain(|_, (owner, _)| *owner != id);
        g.len()
    });
    MAYBE_PENDING.with(|p| p.set(left > 0));
}

/// A stream named a root context that does not exist.
#[cold]
#[inline(never)]
fn no_root(id: u32, parent: u32) {
    crate::host::log(
        crate::LogLevel::Error,
        &format!("sluice-plugin: context {id} names root context {parent}, which does not exist; its callbacks will do nothing"),
    );
}

/// How many callouts and gRPC calls are waiting for an answer (for tests).
#[doc(hidden)]
pub fn pending_calls() -> usize {
    CALLOUTS.with(|c| c.borrow().len()) + GRPC.with(|g| g.borrow().len())
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
    #[inline(always)]
    pub fn on_context_create(&self, id: u32, parent: u32, new_root: impl FnOnce(u32) -> R) {
        if parent == 0 {
            return self.create_root(id, new_root);
        }
        match self.with_root(parent, None, |root| Some(root.create_http_context(id))) {
            Some(stream) => {
                self.streams.borrow_mut().insert(id, stream);
            }
            None => no_root(id, parent),
        }
    }

    // The rare paths of the callbacks below stay out of line: wasm compilers save registers
    // for a function's whole body, so inlined they would cost every request.
    #[cold]
    #[inline(never)]
    fn create_root(&self, id: u32, new_root: impl FnOnce(u32) -> R) {
        let root = new_root(id);
        self.roots.borrow_mut().push((id, root));
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
    #[inline(always)]
    pub fn on_request_headers(&self, id: u32, headers: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| {
            s.on_request_headers(headers, eos != 0)
        }) as u32
    }

    /// `proxy_on_request_body`.
    #[inline(always)]
    pub fn on_request_body(&self, id: u32, size: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_request_body(size, eos != 0)) as u32
    }

    /// `proxy_on_request_trailers`.
    #[inline(always)]
    pub fn on_request_trailers(&self, id: u32, trailers: usize) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_request_trailers(trailers)) as u32
    }

    /// `proxy_on_response_headers`.
    #[inline(always)]
    pub fn on_response_headers(&self, id: u32, headers: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| {
            s.on_response_headers(headers, eos != 0)
        }) as u32
    }

    /// `proxy_on_response_body`.
    #[inline(always)]
    pub fn on_response_body(&self, id: u32, size: usize, eos: u32) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_response_body(size, eos != 0)) as u32
    }

    /// `proxy_on_response_trailers`.
    #[inline(always)]
    pub fn on_response_trailers(&self, id: u32, trailers: usize) -> u32 {
        self.with_stream(id, Action::Continue, |s| s.on_response_trailers(trailers)) as u32
    }

    /// Runs `f` on context `id`, a request's or a root's: the answers to callouts go to
    /// whichever sent them.
    fn with_context(&self, id: u32, f: impl FnOnce(&mut dyn Context)) {
        let is_stream = self.streams.borrow_mut().contains(id);
        if is_stream {
            self.with_stream(id, (), |s| f(s))
        } else {
            self.with_root(id, (), |r| f(r))
        }
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
        self.with_context(sender, |c| {
            c.on_http_call_response(token, headers, body, trailers)
        })
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
        self.with_context(owner, |c| match (stream, event) {
            (false, GrpcEvent::Message(size)) => c.on_grpc_call_response(token, 0, size),
            (false, GrpcEvent::Close(status)) => c.on_grpc_call_response(token, status, 0),
            (false, _) => {}
            (true, GrpcEvent::InitialMetadata(n)) => c.on_grpc_stream_initial_metadata(token, n),
            (true, GrpcEvent::Message(size)) => c.on_grpc_stream_message(token, size),
            (true, GrpcEvent::TrailingMetadata(n)) => c.on_grpc_stream_trailing_metadata(token, n),
            (true, GrpcEvent::Close(status)) => c.on_grpc_stream_close(token, status),
        })
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
    #[inline(always)]
    pub fn on_log(&self, id: u32) {
        if self.with_stream(id, false, |s| {
            s.on_log();
            true
        }) {
            return;
        }
        self.root_on_log(id)
    }

    #[cold]
    #[inline(never)]
    fn root_on_log(&self, id: u32) {
        self.with_root(id, (), |r| r.on_log())
    }

    /// `proxy_on_done`: whether the context is done now (a root may ask for time to finish,
    /// then calls `proxy_done`).
    #[inline(always)]
    pub fn on_done(&self, id: u32) -> u32 {
        if let Some(done) = self.with_stream(id, None, |s| Some(s.on_done())) {
            return flag(done);
        }
        self.root_on_done(id)
    }

    #[cold]
    #[inline(never)]
    fn root_on_done(&self, id: u32) -> u32 {
        flag(self.with_root(id, true, |r| r.on_done()))
    }

    /// `proxy_on_delete`: the context is gone; its value is dropped.
    #[inline(always)]
    pub fn on_delete(&self, id: u32) {
        forget_calls_of(id);
        // Taken out of the map before the drop, so a Drop impl runs with no borrow held.
        let stream = self.streams.borrow_mut().remove(id);
        if stream.is_some() {
            drop(stream);
            return;
        }
        self.delete_root(id)
    }

    #[cold]
    #[inline(never)]
    fn delete_root(&self, id: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// What the test contexts saw, shared with the test.
    type Seen = Rc<RefCell<Vec<String>>>;

    struct Root {
        seen: Seen,
    }

    struct Stream {
        id: u32,
        seen: Seen,
    }

    impl Context for Root {
        fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
            self.seen.borrow_mut().push(format!("root got {token}"));
        }
    }

    impl RootContext for Root {
        type Http = Stream;

        fn create_http_context(&mut self, id: u32) -> Stream {
            Stream {
                id,
                seen: Rc::clone(&self.seen),
            }
        }
    }

    impl Context for Stream {
        fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
            let id = self.id;
            self.seen
                .borrow_mut()
                .push(format!("stream {id} got {token}"));
        }
    }

    impl HttpContext for Stream {
        fn on_request_headers(&mut self, _: usize, _: bool) -> Action {
            // As host::http_call does once the host accepted the callout.
            callout_sent(100 + self.id);
            Action::Pause
        }
    }

    #[test]
    fn answers_reach_the_sender_and_a_deleted_stream_leaves_nothing_behind() {
        let seen = Seen::default();
        let d = Dispatcher::<Root>::new();
        let s = Rc::clone(&seen);
        d.on_context_create(1, 0, move |_| Root { seen: s });
        d.on_context_create(2, 1, |_| unreachable!("a stream is made by its root"));
        d.on_context_create(3, 1, |_| unreachable!("a stream is made by its root"));
        assert_eq!(d.on_request_headers(2, 0, 1), Action::Pause as u32);
        assert_eq!(d.on_request_headers(3, 0, 1), Action::Pause as u32);
        assert_eq!(pending_calls(), 2);

        // The host names the root (as Envoy does); the token says which stream sent it.
        d.on_http_call_response(1, 103, 0, 0, 0);
        assert_eq!(*seen.borrow(), ["stream 3 got 103"]);
        assert_eq!(pending_calls(), 1);

        // Stream 2 goes away before its answer: the answer is never coming.
        d.on_done(2);
        d.on_delete(2);
        assert_eq!(pending_calls(), 0);
        // An answer for an unknown token goes to the context the host names.
        d.on_http_call_response(1, 999, 0, 0, 0);
        assert_eq!(
            seen.borrow().last().map(String::as_str),
            Some("root got 999")
        );

        // Callbacks for a context that does not exist change nothing.
        assert_eq!(d.on_response_headers(2, 0, 1), Action::Continue as u32);
        assert_eq!(d.on_done(42), 1);
    }
}
