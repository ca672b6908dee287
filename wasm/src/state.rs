//! The per-VM host state kept in the wasmtime `Store`, and the [`StreamHost`] through which host
//! calls reach the stream (request/response heads and bodies) during a callback.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use wasmtime::{Memory, TypedFunc};

use crate::abi::{BufferType, MapType, Status};
use crate::limits::MemoryLimiter;
use crate::plugin::PluginInfo;
use crate::property::Prop;
use crate::shared::QueueNotifier;

/// What the embedder (the gateway adapter or a test kit) gives host calls during a stream
/// callback: access to the stream's heads, bodies and per-request properties.
pub trait StreamHost {
    /// A stream header map (request/response headers and trailers), `None` when it does not exist
    /// (yet) in this phase.
    fn headers(&mut self, map: MapType) -> Option<&mut HeaderMap>;
    /// Whether the stream header map `map` exists in this phase (without needing it whole, as
    /// [`StreamHost::headers`] does).
    fn has_headers(&mut self, map: MapType) -> bool {
        self.headers(map).is_some()
    }
    /// Change one field of a stream header map: replace every value of `name` with `value`
    /// (`replace`), add `value` to them, or remove them (`value` none); `false` when the map
    /// does not exist in this phase. A host that keeps a map in another form until it is needed
    /// whole may make the change there. Name and value come by reference (the VM's header cache
    /// holds them): a host that copies their bytes elsewhere clones neither.
    fn edit_header(
        &mut self,
        map: MapType,
        name: &http::HeaderName,
        value: Option<&http::HeaderValue>,
        replace: bool,
    ) -> bool {
        let Some(h) = self.headers(map) else {
            return false;
        };
        match value {
            Some(v) if replace => {
                h.insert(name.clone(), v.clone());
            }
            Some(v) => {
                h.append(name.clone(), v.clone());
            }
            None => {
                h.remove(name);
            }
        }
        true
    }
    /// Pseudo headers shown before the regular ones (`:method`, `:path`, `:authority`, `:scheme`
    /// for requests, `:status` for responses).
    fn pseudo_headers(&self, map: MapType) -> Vec<(&'static str, String)>;
    /// Change a pseudo header (`:path`, `:method`, `:authority`, `:status`).
    fn set_pseudo_header(&mut self, map: MapType, name: &str, value: &[u8]) -> Status;
    /// The body chunk of the current body callback.
    fn body(&mut self, buffer: BufferType) -> Option<&mut Bytes>;
    /// A per-request property (`request.path`, `source.address`, ...) by path segments.
    fn property(&self, path: &[&str]) -> Option<Prop>;
    /// The route cache was cleared: re-match the route before forwarding.
    fn clear_route_cache(&mut self) {}
}

/// A local response asked for with `proxy_send_local_response`.
#[derive(Clone, Debug)]
pub struct LocalReply {
    pub status: u16,
    pub details: String,
    pub body: Bytes,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// gRPC status to put in `grpc-status`, when the plugin gave one (>= 0).
    pub grpc_status: Option<u32>,
}

/// What a context asked of its stream from inside callbacks.
#[derive(Default, Debug)]
pub struct Signals {
    pub continue_request: bool,
    pub continue_response: bool,
    pub close: bool,
    /// Boxed: a local reply is rare, and `Signals` is moved through every callback's result.
    pub local_reply: Option<Box<LocalReply>>,
}

/// An outgoing call a callback started; the embedder sends it and delivers the answer.
#[derive(Debug)]
pub struct Callout {
    pub token: u32,
    /// The context that made it (the effective context at the time).
    pub context_id: u32,
    pub cluster: String,
    pub kind: CalloutKind,
    pub timeout: Duration,
}

/// The request of a [`Callout`].
#[derive(Debug)]
pub enum CalloutKind {
    /// `proxy_http_call`: method/path/authority come from the pseudo headers.
    Http {
        request: http::Request<Bytes>,
        trailers: HeaderMap,
    },
    /// `proxy_grpc_call`: unary; `message` is the serialized protobuf (unframed).
    Grpc {
        service: String,
        method: String,
        metadata: HeaderMap,
        message: Bytes,
    },
    /// `proxy_grpc_stream`: messages follow through [`GrpcSend`]s with the same token.
    GrpcStream {
        service: String,
        method: String,
        metadata: HeaderMap,
    },
}

/// A message (or the end, or a cancel) for an open gRPC stream, from `proxy_grpc_send`,
/// `proxy_grpc_close` or `proxy_grpc_cancel`.
#[derive(Debug)]
pub struct GrpcSend {
    pub token: u32,
    /// Unframed message; `None` for a bare half-close or a cancel.
    pub message: Option<Bytes>,
    pub end_stream: bool,
    /// Reset the stream instead of ending it.
    pub cancel: bool,
}

/// An event on an open gRPC stream, delivered to the plugin.
#[derive(Debug)]
pub enum GrpcEvent {
    InitialMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    Message(Bytes),
    TrailingMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// The stream ended: gRPC status and message.
    Close(u32, String),
}

/// The answer of a callout, kept in the VM while its callback runs so host calls can read it.
#[derive(Default, Debug, Clone)]
pub struct CalloutResponse {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Bytes,
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A map keyed by context ids or call tokens: numbers the host hands out, so a fast
/// non-keyed hash is safe (no client or plugin chooses them).
pub type IdMap<V> = rustc_hash::FxHashMap<u32, V>;
/// A set of context ids or call tokens (see [`IdMap`]).
pub type IdSet = rustc_hash::FxHashSet<u32>;
/// A map keyed by other host-chosen numbers (plugin ids, plugin use ids): see [`IdMap`].
pub type NumMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Pointer to the stream host of the running callback, valid only while that callback runs.
pub(crate) struct StreamPtr(NonNull<dyn StreamHost + 'static>);

/// The store data of one VM.
pub struct HostState {
    pub(crate) info: Arc<PluginInfo>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    pub(crate) stream: Option<StreamPtr>,
    /// Context of the running callback and the one host calls act on (`proxy_set_effective_context`).
    pub(crate) current_ctx: u32,
    pub(crate) effective_ctx: u32,
    /// Plugin configuration of the root context being configured.
    pub(crate) plugin_config: Bytes,
    /// `proxy_on_configure` is running (`proxy_get_configuration` then returns the plugin's).
    pub(crate) configuring: bool,
    /// Contexts whose `proxy_on_done` returned false: `proxy_done` from (the effective context
    /// of) one of them lets the host delete it.
    pub(crate) finishing: IdSet,
    /// The context whose `proxy_on_done` is running, and whether it called `proxy_done` for
    /// itself meanwhile (kept out of [`HostState::finishing`]: no set insert and removal for
    /// every stream that ends normally).
    pub(crate) done_running: Option<(u32, bool)>,
    /// Contexts the plugin released with `proxy_done` after deferring in `proxy_on_done`.
    pub(crate) done_released: Vec<u32>,
    pub(crate) callout_response: Option<CalloutResponse>,
    pub(crate) grpc_status: Option<(u32, Bytes)>,
    pub(crate) signals: IdMap<Signals>,
    pub(crate) callouts: Vec<Callout>,
    pub(crate) next_token: u32,
    /// Tokens of open gRPC streams (to tell `proxy_grpc_close` of a stream from a unary call).
    pub(crate) grpc_streams: IdSet,
    /// Messages for open gRPC streams, taken by the embedder after each callback.
    pub(crate) grpc_outbox: Vec<GrpcSend>,
    /// Tokens of calls cancelled while in flight: their answers are dropped.
    pub(crate) cancelled: IdSet,
    pub(crate) tick_requests: Vec<(u32, Duration)>,
    pub(crate) queue_notifier: Option<QueueNotifier>,
    pub(crate) foreign: Option<Arc<dyn ForeignFunctions>>,
    pub(crate) known_cluster: Option<crate::vm::KnownCluster>,
    pub(crate) exit_code: Option<i32>,
    /// Properties the plugin set on itself (`proxy_set_property` of non-standard names).
    pub(crate) own_properties: HashMap<String, Bytes>,
    /// Contexts created in this VM that have not been deleted.
    pub(crate) live_contexts: usize,
    /// Header names and values the plugin set lately, so that setting the same header on every
    /// request does not allocate (see [`HeaderCache`]).
    pub(crate) header_cache: HeaderCache,
    /// The globals of the whole-response helper, when the plugin has one (see
    /// [`crate::merged`]).
    pub(crate) whole_flags: Option<crate::merged::WholeFlags>,
    /// A whole-response entry is running: the response body is visible only once the helper
    /// says the body callback runs (see [`crate::host::body_visible`]).
    pub(crate) in_whole: bool,
}

/// The last few header names and values host calls built from plugin bytes. A plugin that sets
/// `x-bench: 1` on every response would otherwise allocate a name and a value per call; a hit
/// is a byte comparison and a reference-count increment. Bounded: a few entries, short values.
#[derive(Default)]
pub(crate) struct HeaderCache {
    names: Vec<http::HeaderName>,
    values: Vec<http::HeaderValue>,
    next_name: usize,
    next_value: usize,
}

/// Entries of each kind in a [`HeaderCache`].
const HEADER_CACHE_ENTRIES: usize = 16;
/// Longest name or value a [`HeaderCache`] keeps (longer ones are built per call).
const HEADER_CACHE_MAX_LEN: usize = 128;

/// Where a [`HeaderCache`] lookup found its answer: an entry (by index) or a new one too long
/// to keep.
enum Found<T> {
    Cached(usize),
    Fresh(T),
}

impl HeaderCache {
    /// The header name for `name` (any case) and, when given, the header value for `value`,
    /// borrowed from the cache when it holds them; `None` when either is not valid.
    pub(crate) fn field(
        &mut self,
        name: &[u8],
        value: Option<&[u8]>,
    ) -> Option<(
        Cow<'_, http::HeaderName>,
        Option<Cow<'_, http::HeaderValue>>,
    )> {
        let name = self.name_slot(name)?;
        let value = match value {
            Some(v) => Some(self.value_slot(v)?),
            None => None,
        };
        let name = match name {
            Found::Cached(i) => Cow::Borrowed(&self.names[i]),
            Found::Fresh(n) => Cow::Owned(n),
        };
        let value = value.map(|v| match v {
            Found::Cached(i) => Cow::Borrowed(&self.values[i]),
            Found::Fresh(v) => Cow::Owned(v),
        });
        Some((name, value))
    }

    fn name_slot(&mut self, bytes: &[u8]) -> Option<Found<http::HeaderName>> {
        // Plugins usually pass names already lowercase: an exact comparison first (a memcmp),
        // the byte-by-byte case-insensitive one only when that finds nothing.
        let exact = self
            .names
            .iter()
            .position(|n| n.as_str().as_bytes() == bytes);
        let found = exact.or_else(|| {
            self.names
                .iter()
                .position(|n| n.as_str().as_bytes().eq_ignore_ascii_case(bytes))
        });
        if let Some(i) = found {
            return Some(Found::Cached(i));
        }
        let name = http::HeaderName::from_bytes(bytes).ok()?;
        Some(keep(
            &mut self.names,
            &mut self.next_name,
            name,
            bytes.len(),
        ))
    }

    fn value_slot(&mut self, bytes: &[u8]) -> Option<Found<http::HeaderValue>> {
        if let Some(i) = self.values.iter().position(|v| v.as_bytes() == bytes) {
            return Some(Found::Cached(i));
        }
        let value = http::HeaderValue::from_bytes(bytes).ok()?;
        Some(keep(
            &mut self.values,
            &mut self.next_value,
            value,
            bytes.len(),
        ))
    }
}

/// Keeps `item`, made from `len` bytes, in `list` unless it is too long to keep; the oldest
/// entry makes room once the list is full.
fn keep<T>(list: &mut Vec<T>, next: &mut usize, item: T, len: usize) -> Found<T> {
    if len > HEADER_CACHE_MAX_LEN {
        return Found::Fresh(item);
    }
    if list.len() < HEADER_CACHE_ENTRIES {
        list.push(item);
        return Found::Cached(list.len() - 1);
    }
    let i = *next;
    list[i] = item;
    *next = (i + 1) % HEADER_CACHE_ENTRIES;
    Found::Cached(i)
}

/// Functions a plugin may call by name with `proxy_call_foreign_function`.
pub trait ForeignFunctions: Send + Sync {
    /// Run `name` for `plugin` with `args`; the result bytes are returned to the plugin.
    ///
    /// # Errors
    /// `Status::NotFound` for an unknown name, `Status::BadArgument` for bad arguments.
    fn call(&self, plugin: &str, name: &str, args: &[u8]) -> Result<Vec<u8>, Status>;
}

impl HostState {
    pub(crate) fn new(
        info: Arc<PluginInfo>,
        queue_notifier: Option<QueueNotifier>,
        foreign: Option<Arc<dyn ForeignFunctions>>,
    ) -> Self {
        let limiter = MemoryLimiter::new(info.limits.memory);
        HostState {
            info,
            limiter,
            memory: None,
            alloc: None,
            stream: None,
            current_ctx: 0,
            effective_ctx: 0,
            plugin_config: Bytes::new(),
            configuring: false,
            finishing: IdSet::default(),
            done_running: None,
            done_released: Vec::new(),
            callout_response: None,
            grpc_status: None,
            signals: IdMap::default(),
            callouts: Vec::new(),
            next_token: 1,
            cancelled: IdSet::default(),
            grpc_streams: IdSet::default(),
            grpc_outbox: Vec::new(),
            tick_requests: Vec::new(),
            queue_notifier,
            foreign,
            known_cluster: None,
            exit_code: None,
            own_properties: HashMap::new(),
            live_contexts: 0,
            header_cache: HeaderCache::default(),
            whole_flags: None,
            in_whole: false,
        }
    }

    /// The stream host of the running callback, when host calls act on the callback's own
    /// stream context.
    #[allow(unsafe_code)]
    pub(crate) fn stream(&mut self) -> Option<&mut dyn StreamHost> {
        if self.effective_ctx != self.current_ctx {
            return None;
        }
        // SAFETY: `stream` is set only by `Vm::with_stream` from a `&mut dyn StreamHost` that
        // outlives the wasm call it wraps, and is cleared (by a drop guard, also on unwind)
        // before that borrow ends. Host calls run synchronously inside that wasm call, on the
        // same thread, and `&mut self` guarantees no second reference is handed out at once.
        self.stream.as_mut().map(|p| unsafe { p.0.as_mut() })
    }

    /// [`HostState::stream`] and the header cache at once (a header edit borrows its name and
    /// value from the cache while it changes the stream).
    #[allow(unsafe_code)]
    pub(crate) fn stream_and_cache(&mut self) -> (Option<&mut dyn StreamHost>, &mut HeaderCache) {
        let own = self.effective_ctx == self.current_ctx;
        // SAFETY: as in `stream`.
        let stream = self
            .stream
            .as_mut()
            .filter(|_| own)
            .map(|p| unsafe { p.0.as_mut() });
        (stream, &mut self.header_cache)
    }

    /// The signals of the effective context. Host calls record a signal through
    /// [`crate::host::signal`], which also stops a running merged entry before its next callback.
    pub(crate) fn signal_slot(&mut self) -> &mut Signals {
        self.signals.entry(self.effective_ctx).or_default()
    }
}

impl StreamPtr {
    /// Erase the borrow's lifetime; see the SAFETY note in [`HostState::stream`].
    #[allow(unsafe_code)]
    pub(crate) fn new(host: &mut dyn StreamHost) -> Self {
        let ptr: NonNull<dyn StreamHost + '_> = NonNull::from(host);
        // SAFETY: only the lifetime bound of the trait object changes (same layout); the pointer
        // is dropped before the borrow it came from ends (see `Vm::with_stream`).
        StreamPtr(unsafe {
            std::mem::transmute::<NonNull<dyn StreamHost + '_>, NonNull<dyn StreamHost + 'static>>(
                ptr,
            )
        })
    }
}

impl HostState {
    /// A state for type introspection only (the linker's signature table).
    pub(crate) fn placeholder() -> Self {
        HostState::new(Arc::new(PluginInfo::default()), None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_cache_lends_what_it_keeps_and_builds_the_rest() {
        let mut cache = HeaderCache::default();
        let (name, value) = cache.field(b"x-bench", Some(b"1")).expect("valid");
        assert!(matches!(name, Cow::Borrowed(_)), "kept on first use");
        assert_eq!(name.as_str(), "x-bench");
        assert_eq!(value.as_deref().map(|v| v.as_bytes()), Some(&b"1"[..]));
        // Found again in any case, as the same entry.
        let (name, value) = cache.field(b"X-Bench", None).expect("valid");
        assert_eq!(name.as_str(), "x-bench");
        assert!(value.is_none());
        assert_eq!(cache.names.len(), 1);
        // Invalid names and values are refused, whichever is wrong.
        assert!(cache.field(b"bad name", Some(b"1")).is_none());
        assert!(cache.field(b"x-ok", Some(b"bad\nvalue")).is_none());
        // Too long to keep: built for the call, the cache unchanged.
        let long = vec![b'v'; HEADER_CACHE_MAX_LEN + 1];
        let kept = cache.values.len();
        let (_, value) = cache.field(b"x-bench", Some(&long)).expect("valid");
        assert!(matches!(value, Some(Cow::Owned(_))));
        assert_eq!(value.as_deref().map(|v| v.len()), Some(long.len()));
        assert_eq!(cache.values.len(), kept);
        // Full: the oldest entries make room, and every answer is still the asked one.
        for i in 0..HEADER_CACHE_ENTRIES + 3 {
            let asked = format!("x-h{i}");
            let (name, _) = cache.field(asked.as_bytes(), None).expect("valid");
            assert_eq!(name.as_str(), asked);
        }
        assert_eq!(cache.names.len(), HEADER_CACHE_ENTRIES);
        let (name, _) = cache.field(b"x-bench", None).expect("valid");
        assert_eq!(name.as_str(), "x-bench", "evicted, then built again");
    }
}
