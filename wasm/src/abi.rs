//! Numeric constants of the proxy-wasm ABI (0.1.0 / 0.2.0 / 0.2.1): status codes, buffer and map
//! types, stream types and the ABI version a module declares through its exports.

/// The status every host call returns (the spec's `WasmResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    /// The value returned to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Which buffer `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// Decode the guest's number; `None` for an unknown type (the call returns BadArgument).
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// Which header map the header calls address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    /// Decode the guest's number; `None` for an unknown type.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }

    /// Maps owned by the stream (the others belong to a callout response held by the VM).
    pub fn is_stream_map(self) -> bool {
        matches!(
            self,
            MapType::RequestHeaders
                | MapType::RequestTrailers
                | MapType::ResponseHeaders
                | MapType::ResponseTrailers
        )
    }
}

/// The direction `proxy_continue_stream` / `proxy_close_stream` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    Request,
    Response,
    Downstream,
    Upstream,
}

impl StreamType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => StreamType::Request,
            1 => StreamType::Response,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// What a header or body callback returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// `StopIteration` (headers) or `StopIterationAndBuffer` (bodies) and the other stop variants.
    Pause,
}

impl Action {
    pub fn from_i32(v: i32) -> Self {
        if v == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// Metric kinds of `proxy_define_metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// The ABI a module declares by exporting `proxy_abi_version_X_Y_Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiVersion {
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

impl AbiVersion {
    /// The export name that declares this version.
    pub fn export_name(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "proxy_abi_version_0_1_0",
            AbiVersion::V0_2_0 => "proxy_abi_version_0_2_0",
            AbiVersion::V0_2_1 => "proxy_abi_version_0_2_1",
        }
    }

    /// Dotted form for logs and `/plugins`.
    pub fn as_str(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        }
    }

    /// Every version the host speaks, newest first.
    pub const ALL: [AbiVersion; 3] = [AbiVersion::V0_2_1, AbiVersion::V0_2_0, AbiVersion::V0_1_0];
}

/// gRPC status UNAVAILABLE, used for fail-closed answers to gRPC requests.
pub const GRPC_UNAVAILABLE: u32 = 14;
