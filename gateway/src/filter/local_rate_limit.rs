//! `local-rate-limit`: a token bucket per client address (or per value of a header), shared by every
//! worker and kept across reloads, answering 429 with `Retry-After` when a key is over its rate, and
//! optionally banning addresses that keep hammering.
//!
//! Each bucket is one atomic: the "generic cell rate algorithm" stores the theoretical arrival time
//! (TAT) of the next request; a request is allowed when, after it, the bucket's debt `TAT - now` is
//! at most `burst` emission intervals. This is exactly a token bucket of capacity `burst` refilled
//! at `requests_per_second`, updated with one compare-and-swap instead of a lock. A bucket whose TAT
//! is in the past is full, so forgetting it changes nothing: that is what makes eviction safe.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::header::RETRY_AFTER;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{FilterCx, Flow, HttpFilter, LocalResponse, Phases};
use crate::config::units::Dur;
use crate::services::Services;

/// Registered name.
pub const NAME: &str = "local-rate-limit";
/// Buckets kept at most (per filter use) unless `max_keys:` says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Window in which `ban.after` rejections trigger a ban, unless `ban.window:` says otherwise.
pub const DEFAULT_BAN_WINDOW: Dur = Dur::from_secs(60);
/// Ban length unless `ban.ttl:` says otherwise.
pub const DEFAULT_BAN_TTL: Dur = Dur::from_secs(600);
/// How often idle buckets are swept while the table has room.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How often a full table may be swept (a sweep walks every bucket; never on every request).
pub const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Highest `requests_per_second` (one nanosecond between requests).
const MAX_RATE: f64 = 1e9;
/// Largest `burst`.
const MAX_BURST: u32 = 10_000_000;
/// Remaining-count header values prepared at build time, so allowed requests do not format numbers.
const PREBUILT_COUNTS: u32 = 1024;

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    requests_per_second: f64,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default = "yes")]
    headers: bool,
    #[serde(default)]
    ban: Option<BanConfig>,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanConfig {
    after: u32,
    #[serde(default = "default_ban_window")]
    window: Dur,
    #[serde(default = "default_ban_ttl")]
    ttl: Dur,
}

fn default_key() -> String {
    "client_ip".to_string()
}
fn default_status() -> u16 {
    429
}
fn yes() -> bool {
    true
}
fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}
fn default_ban_window() -> Dur {
    DEFAULT_BAN_WINDOW
}
fn default_ban_ttl() -> Dur {
    DEFAULT_BAN_TTL
}

/// What a request is counted by.
#[derive(Debug)]
enum KeySpec {
    ClientIp,
    /// The header's value; requests without it are counted by client address.
    Header(HeaderName),
}

/// The rate as GCRA parameters, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Time to refill one token.
    interval: u64,
    /// `interval * burst`: the largest debt a bucket may carry (the bucket's capacity).
    tolerance: u64,
}

impl Rate {
    /// # Errors
    /// When the rate or burst is out of range.
    pub fn new(requests_per_second: f64, burst: u32) -> Result<Rate, String> {
        if !requests_per_second.is_finite() || requests_per_second <= 0.0 {
            return Err(format!(
                "requests_per_second must be a number greater than 0 (got {requests_per_second}); e.g. `requests_per_second: 100`, or `0.5` for one request every 2 seconds"
            ));
        }
        if requests_per_second > MAX_RATE {
            return Err(format!(
                "requests_per_second must be at most {MAX_RATE} (got {requests_per_second})"
            ));
        }
        if burst == 0 || burst > MAX_BURST {
            return Err(format!(
                "burst must be between 1 and {MAX_BURST} (got {burst}); it is how many requests may come at once"
            ));
        }
        // Clamped to at least 1ns by the MAX_RATE check; `as` saturates for tiny rates.
        let interval = (1e9 / requests_per_second).round().max(1.0) as u64;
        let tolerance = interval.checked_mul(u64::from(burst)).ok_or_else(|| {
            format!("requests_per_second {requests_per_second} with burst {burst} is out of range; raise the rate or lower the burst")
        })?;
        Ok(Rate {
            interval,
            tolerance,
        })
    }
}

/// The outcome of taking a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; this many tokens are left.
    Allowed { remaining: u64 },
    /// Over the limit; a token will be available after this many nanoseconds.
    Rejected { wait: u64 },
}

/// One key's bucket.
#[derive(Debug, Default)]
struct Bucket {
    /// Theoretical arrival time (ns on the state's clock); at or before now means full.
    tat: AtomicU64,
    /// Rejections since `window_start` (for bans).
    rejections: AtomicU32,
    window_start: AtomicU64,
}

impl Bucket {
    fn acquire(&self, now: u64, rate: Rate) -> Decision {
        let mut stored = self.tat.load(Ordering::Relaxed);
        loop {
            let next = stored.max(now).saturating_add(rate.interval);
            let debt = next - now;
            if debt > rate.tolerance {
                return Decision::Rejected {
                    wait: debt - rate.tolerance,
                };
            }
            match self
                .tat
                .compare_exchange_weak(stored, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Decision::Allowed {
                        remaining: (rate.tolerance - debt) / rate.interval,
                    }
                }
                Err(actual) => stored = actual,
            }
        }
    }

    /// Count a rejection; true exactly when this one reaches `after` within the window.
    fn note_rejection(&self, now: u64, ban: &BanPolicy) -> bool {
        let start = self.window_start.load(Ordering::Relaxed);
        if self.rejections.load(Ordering::Relaxed) == 0 || now.saturating_sub(start) >= ban.window {
            // A new window. Two workers may race here; at worst one rejection is not counted.
            self.window_start.store(now, Ordering::Relaxed);
            self.rejections.store(1, Ordering::Relaxed);
            return ban.after == 1;
        }
        self.rejections.fetch_add(1, Ordering::Relaxed) + 1 == ban.after
    }

    /// Whether forgetting this bucket loses nothing: full, and no ban window running.
    fn idle(&self, now: u64, ban_window: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
            && (self.rejections.load(Ordering::Relaxed) == 0
                || now.saturating_sub(self.window_start.load(Ordering::Relaxed)) >= ban_window)
    }
}

/// When rejections turn into a ban.
#[derive(Clone, Copy, Debug)]
pub struct BanPolicy {
    after: u32,
    window: u64,
    ttl: Duration,
}

/// Every bucket of one filter use: shared by the workers, kept across reloads
/// (`Services::shared_state`), bounded to `max_keys` buckets.
#[derive(Debug)]
pub struct Buckets {
    base: Instant,
    by_ip: DashMap<IpAddr, Bucket>,
    by_header: DashMap<Box<[u8]>, Bucket>,
    /// Buckets in both maps (kept here: `DashMap::len` locks every shard).
    len: AtomicUsize,
    /// Shared by keys that found the table full of active buckets.
    overflow: Bucket,
    last_sweep: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            base: Instant::now(),
            by_ip: DashMap::new(),
            by_header: DashMap::new(),
            len: AtomicUsize::new(0),
            overflow: Bucket::default(),
            last_sweep: AtomicU64::new(0),
        }
    }
}

/// The result of a check, with what the caller needs to act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Whether the request may go on.
    pub decision: Decision,
    /// The key just reached the ban threshold.
    pub ban: bool,
}

/// Limits applied by [`Buckets::check_ip`] and [`Buckets::check_bytes`].
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Refill rate and capacity of every bucket.
    pub rate: Rate,
    /// Most buckets held before new keys share the overflow bucket.
    pub max_keys: usize,
    /// When rejections of an address turn into a ban (addresses only).
    pub ban: Option<BanPolicy>,
}

impl Buckets {
    /// Nanoseconds on this state's monotonic clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Buckets currently held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take a token for a client address at time `now`.
    pub fn check_ip(&self, ip: IpAddr, now: u64, p: &Policy) -> Checked {
        self.check(&self.by_ip, &ip, || ip, now, p, p.ban.as_ref())
    }

    /// Take a token for a header value at time `now` (never banned: a header is not an address).
    pub fn check_bytes(&self, key: &[u8], now: u64, p: &Policy) -> Checked {
        self.check(&self.by_header, key, || Box::from(key), now, p, None)
    }

    fn check<K, Q>(
        &self,
        map: &DashMap<K, Bucket>,
        key: &Q,
        owned: impl FnOnce() -> K,
        now: u64,
        p: &Policy,
        ban: Option<&BanPolicy>,
    ) -> Checked
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(b) = map.get(key) {
            return Self::take(&b, now, p, ban);
        }
        self.maybe_sweep(now, p);
        if self.len() >= p.max_keys {
            // Keys seen while the table is full of active buckets share one bucket: memory stays
            // bounded under a flood of new keys while known clients keep their own budget.
            let decision = self.overflow.acquire(now, p.rate);
            return Checked {
                decision,
                ban: false,
            };
        }
        let b = map.entry(owned()).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            Bucket::default()
        });
        Self::take(&b, now, p, ban)
    }

    fn take(b: &Bucket, now: u64, p: &Policy, ban: Option<&BanPolicy>) -> Checked {
        let decision = b.acquire(now, p.rate);
        let ban = match (decision, ban) {
            (Decision::Rejected { .. }, Some(ban)) => b.note_rejection(now, ban),
            _ => false,
        };
        Checked { decision, ban }
    }

    /// Forget idle buckets, at most once per interval (shorter when the table is full).
    fn maybe_sweep(&self, now: u64, p: &Policy) {
        let interval = if self.len() >= p.max_keys {
            FULL_SWEEP_INTERVAL
        } else {
            SWEEP_INTERVAL
        };
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due =
            now.saturating_sub(last) >= u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        // One worker sweeps; the others go on.
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now, p.ban.map_or(0, |b| b.window));
        }
    }

    /// Remove every idle bucket now.
    pub fn sweep(&self, now: u64, ban_window: u64) {
        let removed = AtomicUsize::new(0);
        let keep = |b: &mut Bucket| {
            let idle = b.idle(now, ban_window);
            if idle {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            !idle
        };
        self.by_ip.retain(|_, b| keep(b));
        self.by_header.retain(|_, b| keep(b));
        self.len.fetch_sub(removed.into_inner(), Ordering::Relaxed);
    }
}

/// Per-request state: tokens left, for the response headers.
struct Remaining(u64);

/// The built filter.
pub struct LocalRateLimit {
    key: KeySpec,
    policy: Policy,
    status: StatusCode,
    headers: bool,
    limit_value: HeaderValue,
    /// `counts[n]` is the header value for `n`, for `n` up to the burst (or [`PREBUILT_COUNTS`]).
    counts: Vec<HeaderValue>,
    state: Arc<Buckets>,
    services: Arc<Services>,
}

/// Factory registered as `local-rate-limit`.
///
/// # Errors
/// Unknown keys, a rate or burst out of range, an unknown `key:` form, a status that is not an
/// error status, or `ban` with a header key.
pub fn factory(
    config: Option<&serde_json::Value>,
    cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    let burst = c.burst.unwrap_or_else(|| {
        c.requests_per_second
            .ceil()
            .clamp(1.0, f64::from(MAX_BURST)) as u32
    });
    let rate = Rate::new(c.requests_per_second, burst)?;
    let key = parse_key(&c.key)?;
    let status = StatusCode::from_u16(c.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| {
            format!(
                "status must be a 4xx or 5xx status (got {}); 429 is usual",
                c.status
            )
        })?;
    if c.max_keys == 0 {
        return Err(
            "max_keys must be at least 1; it bounds the memory used by buckets".to_string(),
        );
    }
    let ban = ban_policy(c.ban, &key)?;
    let counts = (0..=burst.min(PREBUILT_COUNTS))
        .map(HeaderValue::from)
        .collect();
    Ok(Arc::new(LocalRateLimit {
        key,
        policy: Policy {
            rate,
            max_keys: c.max_keys,
            ban,
        },
        status,
        headers: c.headers,
        limit_value: HeaderValue::from(burst),
        counts,
        state: cx.services.shared_state(cx.key, Buckets::default),
        services: Arc::clone(cx.services),
    }))
}

fn ban_policy(ban: Option<BanConfig>, key: &KeySpec) -> Result<Option<BanPolicy>, String> {
    let Some(b) = ban else {
        return Ok(None);
    };
    if !matches!(key, KeySpec::ClientIp) {
        return Err("ban needs `key: client_ip`: only addresses can be banned".to_string());
    }
    if b.after == 0 {
        return Err("ban.after must be at least 1 (rejections before the ban)".to_string());
    }
    if b.window.get().is_zero() || b.ttl.get().is_zero() {
        return Err(
            "ban.window and ban.ttl must be longer than 0, e.g. `window: 1m`, `ttl: 10m`"
                .to_string(),
        );
    }
    Ok(Some(BanPolicy {
        after: b.after,
        window: u64::try_from(b.window.get().as_nanos()).unwrap_or(u64::MAX),
        ttl: b.ttl.get(),
    }))
}

fn parse_key(raw: &str) -> Result<KeySpec, String> {
    if raw == "client_ip" {
        return Ok(KeySpec::ClientIp);
    }
    if let Some(name) = raw.strip_prefix("header:") {
        return HeaderName::from_bytes(name.trim().as_bytes())
            .map(KeySpec::Header)
            .map_err(|_| {
                format!("key: `{name}` is not a valid header name; e.g. `header:x-api-key`")
            });
    }
    Err(format!(
        "key: `{raw}` is not known; use `client_ip` or `header:NAME` (e.g. `header:x-api-key`)"
    ))
}

impl LocalRateLimit {
    fn count(&self, n: u64) -> HeaderValue {
        usize::try_from(n)
            .ok()
            .and_then(|i| self.counts.get(i))
            .cloned()
            .unwrap_or_else(|| HeaderValue::from(n))
    }

    fn reject(&self, wait: u64) -> LocalResponse {
        let secs = wait.div_ceil(1_000_000_000).max(1);
        let mut r = LocalResponse::new(self.status, "rate_limited")
            .with_body("rate limited\n")
            .with_header(RETRY_AFTER, HeaderValue::from(secs));
        if self.headers {
            r = r
                .with_header(X_RATELIMIT_LIMIT.clone(), self.limit_value.clone())
                .with_header(X_RATELIMIT_REMAINING.clone(), self.count(0));
        }
        r
    }
}

impl HttpFilter for LocalRateLimit {
    fn name(&self) -> &str {
        NAME
    }

    fn phases(&self) -> Phases {
        if self.headers {
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        } else {
            Phases::REQUEST_HEADERS
        }
    }

    /// The response headers come from the request phase's state.
    fn reads_request_headers_later(&self) -> bool {
        false
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let now = self.state.now();
        let ip = cx.ex.info.client_addr.ip().to_canonical();
        let header = match &self.key {
            KeySpec::Header(h) => cx.ex.request.headers.get(h),
            KeySpec::ClientIp => None,
        };
        let checked = match header {
            Some(v) => self.state.check_bytes(v.as_bytes(), now, &self.policy),
            None => self.state.check_ip(ip, now, &self.policy),
        };
        if checked.ban {
            if let Some(ban) = &self.policy.ban {
                self.services.bans.ban(ip, Some(ban.ttl), NAME);
            }
        }
        match checked.decision {
            Decision::Allowed { remaining } => {
                if self.headers {
                    cx.set_state(Remaining(remaining));
                }
                Flow::Continue
            }
            Decision::Rejected { wait } => Flow::respond(self.reject(wait)),
        }
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        // No state: the request was rejected here (the 429 has its headers) or never got here.
        let Some(Remaining(n)) = cx.take_state::<Remaining>() else {
            return Flow::Continue;
        };
        if let Some(resp) = cx.ex.response.as_mut() {
            resp.headers
                .insert(X_RATELIMIT_LIMIT.clone(), self.limit_value.clone());
            resp.headers
                .insert(X_RATELIMIT_REMAINING.clone(), self.count(n));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests;
