//! The numbers of the proxy-wasm ABI 0.2.1 that plugins see: what a callback returns, the status
//! a host call answers, and which map, buffer, stream, metric or log level a call addresses.

/// What a stream callback tells the host to do with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// Go on to the next filter (or the upstream / the client).
    Continue = 0,
    /// Hold the stream until the plugin resumes it ([`crate::host::resume_request`] /
    /// [`crate::host::resume_response`]), replies, or the host's pause limit passes. On a body
    /// callback, the host buffers the body and delivers it again, whole, at its end.
    Pause = 1,
}

/// What a host call answered when it did not succeed (the spec's `WasmResult`, without `Ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No such header, property, buffer, shared-data key or queue.
    NotFound,
    /// The host rejected an argument (an unknown map type, a bad header name...).
    BadArgument,
    /// A value could not be serialized.
    SerializationFailure,
    /// A value could not be parsed.
    ParseFailure,
    /// A property path is not a known attribute.
    BadExpression,
    /// A pointer or length fell outside the plugin's memory.
    InvalidMemoryAccess,
    /// A shared queue had nothing to dequeue.
    Empty,
    /// A shared-data compare-and-swap lost against another writer.
    CasMismatch,
    /// The result did not have the expected shape.
    ResultMismatch,
    /// The host failed internally.
    InternalFailure,
    /// The peer of a callout or stream is gone.
    BrokenConnection,
    /// The host does not implement the call.
    Unimplemented,
    /// A status number this SDK does not know.
    Other(u32),
}

impl Status {
    /// `Ok(())` for status 0, the status otherwise.
    pub(crate) fn check(code: u32) -> Result<(), Status> {
        Err(match code {
            0 => return Ok(()),
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            5 => Status::BadExpression,
            6 => Status::InvalidMemoryAccess,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            9 => Status::ResultMismatch,
            10 => Status::InternalFailure,
            11 => Status::BrokenConnection,
            12 => Status::Unimplemented,
            other => Status::Other(other),
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host call failed: {self:?}")
    }
}

impl std::error::Error for Status {}

/// A header map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    /// The request's headers (request-headers callback onwards).
    RequestHeaders = 0,
    /// The request's trailers (request-trailers callback).
    RequestTrailers = 1,
    /// The response's headers (response-headers callback onwards).
    ResponseHeaders = 2,
    /// The response's trailers (response-trailers callback).
    ResponseTrailers = 3,
    /// The initial metadata of a gRPC stream (in `on_grpc_stream_initial_metadata`).
    GrpcInitialMetadata = 4,
    /// The trailing metadata of a gRPC stream (in `on_grpc_stream_trailing_metadata`).
    GrpcTrailingMetadata = 5,
    /// The headers of an http callout's response (in `on_http_call_response`).
    HttpCallResponseHeaders = 6,
    /// The trailers of an http callout's response (in `on_http_call_response`).
    HttpCallResponseTrailers = 7,
}

/// A byte buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BufferType {
    /// The request body (request-body callback).
    HttpRequestBody = 0,
    /// The response body (response-body callback).
    HttpResponseBody = 1,
    /// The body of an http callout's response (in `on_http_call_response`).
    HttpCallResponseBody = 4,
    /// A gRPC message received (in `on_grpc_call_response` and `on_grpc_stream_message`),
    /// without its 5-byte frame header.
    GrpcReceiveBuffer = 5,
    /// The VM's configuration (in `on_vm_start`).
    VmConfiguration = 6,
    /// The plugin's configuration (in `on_configure`).
    PluginConfiguration = 7,
}

/// A direction of an HTTP stream, for resuming or closing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamType {
    /// The request, on its way to the upstream.
    Request = 0,
    /// The response, on its way to the client.
    Response = 1,
}

/// A log level, as `proxy_log` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    /// Most verbose.
    Trace = 0,
    /// Debugging detail.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something unexpected the plugin handled.
    Warn = 3,
    /// Something failed.
    Error = 4,
    /// The plugin cannot go on.
    Critical = 5,
}

/// A metric's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricType {
    /// Only goes up.
    Counter = 0,
    /// Goes up and down.
    Gauge = 1,
    /// A distribution of recorded values.
    Histogram = 2,
}
