//! Helpers shared by the Rust conformance plugins: a CAS-retried shared-data counter and stable
//! names for statuses, so every plugin reports host results in the same words.

pub mod hostile;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// How often a CAS update is retried before giving up; far above any real contention between
/// a handful of workers, low enough that a host that never accepts the CAS cannot hang a callback.
pub const MAX_CAS_ATTEMPTS: u32 = 1000;

/// The result of [`cas_add`]: the value stored and how many CAS mismatches it took to store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasAdd {
    /// The counter value after the update.
    pub value: u64,
    /// CAS mismatches seen before the update was accepted.
    pub retries: u32,
}

/// Adds `delta` to the decimal counter stored under `key` in proxy-wasm shared data, retrying on
/// CAS mismatch. A missing or unparsable value counts as 0.
///
/// # Errors
/// The host's status when get/set fails for a reason other than a CAS mismatch, or
/// `Status::CasMismatch` after [`MAX_CAS_ATTEMPTS`] mismatches.
pub fn cas_add(key: &str, delta: u64) -> Result<CasAdd, Status> {
    let mut retries = 0;
    while retries < MAX_CAS_ATTEMPTS {
        let (current, cas) = hostcalls::get_shared_data(key)?;
        let old = current.as_deref().map(parse_u64).unwrap_or(0);
        let value = old.saturating_add(delta);
        // A missing key has no CAS; the host accepts cas 0 / None as "no check" for a first write,
        // which is the documented proxy-wasm behaviour.
        match hostcalls::set_shared_data(key, Some(value.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(CasAdd { value, retries }),
            Err(Status::CasMismatch) => retries += 1,
            Err(other) => return Err(other),
        }
    }
    Err(Status::CasMismatch)
}

/// Reads the decimal counter stored under `key` (0 when missing or unparsable).
///
/// # Errors
/// The host's status when the get fails.
pub fn read_counter(key: &str) -> Result<u64, Status> {
    let (current, _) = hostcalls::get_shared_data(key)?;
    Ok(current.as_deref().map(parse_u64).unwrap_or(0))
}

/// Parses ASCII decimal bytes, 0 for anything else: counters written by other plugins or a
/// misbehaving host must not make a conformance plugin trap.
pub fn parse_u64(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The proxy-wasm spelling of a status, used in every `x-...` report header.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "Ok",
        Status::NotFound => "NotFound",
        Status::BadArgument => "BadArgument",
        Status::SerializationFailure => "SerializationFailure",
        Status::ParseFailure => "ParseFailure",
        Status::Empty => "Empty",
        Status::CasMismatch => "CasMismatch",
        Status::InternalFailure => "InternalFailure",
        _ => "Other",
    }
}

/// Settings of a hostile plugin: which callback misbehaves and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hostile {
    /// Callback name: `vm_start`, `configure`, `request_headers`, `request_body`,
    /// `response_headers`, `response_body`, `tick`, `log`, `done`.
    pub place: Option<String>,
    /// Plugin-specific variant (`panic`/`unreachable`, `alloc`/`grow`, ...).
    pub mode: Option<String>,
    /// Plugin-specific count (callouts per request, ...).
    pub count: Option<u64>,
}

/// Parses a hostile plugin's configuration: either a bare callback name (`request_headers`) or
/// JSON `{"where": "request_headers", "mode": "...", "count": N}`. Anything else is empty.
pub fn hostile_config(config: &[u8]) -> Hostile {
    let Ok(text) = std::str::from_utf8(config) else {
        return Hostile::default();
    };
    let text = text.trim();
    if !text.starts_with('{') {
        return Hostile {
            place: (!text.is_empty()).then(|| text.to_owned()),
            ..Hostile::default()
        };
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Hostile::default();
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Hostile {
        place: field("where"),
        mode: field("mode"),
        count: value.get("count").and_then(|v| v.as_u64()),
    }
}
