//! Retry policy: which requests may be retried, on what, how often, and how long to wait.
//!
//! Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose request body is empty
//! at send time (`is_end_stream`) are retried: the proxy streams bodies and does not buffer them,
//! so a request with a body cannot be sent twice. `attempts` counts retries, so `attempts: 2`
//! allows up to three tries, each on a different endpoint when one is available.
//!
//! Retries are bounded by a budget, Envoy's model: a retry starts only while the retries in
//! flight on the cluster are fewer than `max(min_retries_per_second, budget_percent% of the
//! cluster's active requests)` (defaults 10 and 20%). Under a broad outage this caps the extra
//! load retries add to a struggling upstream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::model::{
    RetryConfig, RetryOn, DEFAULT_RETRY_BUDGET_PERCENT, DEFAULT_RETRY_MIN_PER_SECOND,
};

use super::cluster::Cluster;
use super::lb;
use super::UpstreamErrorKind;

/// First backoff before a retry; doubled per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Longest backoff between two tries.
const BACKOFF_CAP: Duration = Duration::from_millis(250);

/// Safe to send twice: RFC 9110 idempotent methods (CONNECT, POST and PATCH are not).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::OPTIONS
        || *method == Method::PUT
        || *method == Method::DELETE
        || *method == Method::TRACE
}

/// The policy that applies to this request: None when it must not be retried.
pub(crate) fn applicable<'a>(
    cfg: Option<&'a RetryConfig>,
    method: &Method,
    body_empty: bool,
) -> Option<&'a RetryConfig> {
    cfg.filter(|c| c.attempts > 0 && body_empty && is_idempotent(method))
}

/// Whether a failed try is retried under `cfg`.
pub(crate) fn on_error(cfg: &RetryConfig, kind: UpstreamErrorKind) -> bool {
    cfg.on.iter().any(|on| match on {
        RetryOn::ConnectFailure => kind.is_connect_failure(),
        RetryOn::Reset => kind == UpstreamErrorKind::Reset,
        RetryOn::FiveXx | RetryOn::GatewayError => false,
    })
}

/// Whether a response with `status` is dropped and retried under `cfg`.
pub(crate) fn on_status(cfg: &RetryConfig, status: StatusCode) -> bool {
    let code = status.as_u16();
    code >= 500
        && cfg.on.iter().any(|on| match on {
            RetryOn::FiveXx => true,
            RetryOn::GatewayError => matches!(code, 502..=504),
            RetryOn::ConnectFailure | RetryOn::Reset => false,
        })
}

/// A retry counted against the cluster's budget until dropped.
pub(crate) struct RetryGuard<'c>(&'c Cluster);

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Take one retry from the cluster's budget, or None when the budget is spent.
pub(crate) fn begin<'c>(cluster: &'c Cluster, cfg: &RetryConfig) -> Option<RetryGuard<'c>> {
    let min = u64::from(
        cfg.min_retries_per_second
            .unwrap_or(DEFAULT_RETRY_MIN_PER_SECOND),
    );
    let percent = u64::from(cfg.budget_percent.unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT));
    let active = cluster.endpoint_set().active_requests();
    let limit = min.max(active.saturating_mul(percent) / 100);
    let in_flight = cluster.active_retries.fetch_add(1, Ordering::Relaxed);
    let guard = RetryGuard(cluster);
    (in_flight < limit).then_some(guard)
}

/// The jittered wait before retry number `retry` (1-based): uniform in [d/2, d] with
/// d = 25ms·2^(retry-1), at most 250ms.
pub(crate) fn backoff(retry: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let half = d / 2;
    let jitter_us = lb::below(half.as_micros() as usize + 1) as u64;
    half + Duration::from_micros(jitter_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: Vec<RetryOn>) -> RetryConfig {
        RetryConfig {
            attempts: 1,
            on,
            budget_percent: None,
            min_retries_per_second: None,
        }
    }

    #[test]
    fn backoff_is_jittered_doubling_and_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_micros(12_500) && first <= BACKOFF_BASE);
            let third = backoff(3);
            assert!(third >= Duration::from_millis(50) && third <= Duration::from_millis(100));
            assert!(backoff(30) <= BACKOFF_CAP && backoff(30) >= BACKOFF_CAP / 2);
        }
    }

    #[test]
    fn what_each_condition_retries() {
        let five = policy(vec![RetryOn::FiveXx]);
        assert!(on_status(&five, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!on_status(&five, StatusCode::NOT_FOUND));
        assert!(!on_error(&five, UpstreamErrorKind::Reset));
        let gateway = policy(vec![RetryOn::GatewayError]);
        assert!(on_status(&gateway, StatusCode::BAD_GATEWAY));
        assert!(!on_status(&gateway, StatusCode::INTERNAL_SERVER_ERROR));
        let conn = policy(vec![RetryOn::ConnectFailure]);
        assert!(on_error(&conn, UpstreamErrorKind::ConnectTimeout));
        assert!(!on_error(&conn, UpstreamErrorKind::Timeout));
        assert!(!on_error(&conn, UpstreamErrorKind::BadResponse));
    }

    #[test]
    fn only_idempotent_requests_without_body() {
        let p = policy(vec![RetryOn::Reset]);
        assert!(applicable(Some(&p), &Method::GET, true).is_some());
        assert!(applicable(Some(&p), &Method::GET, false).is_none());
        assert!(applicable(Some(&p), &Method::POST, true).is_none());
        assert!(applicable(Some(&p), &Method::PATCH, true).is_none());
        assert!(applicable(None, &Method::GET, true).is_none());
    }
}
