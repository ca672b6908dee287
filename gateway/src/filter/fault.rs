//! `fault`: inject delays and aborts into a share of requests, to test how clients and upstreams
//! cope (Envoy's fault filter). The delay comes first; an abort chosen for the same request is
//! answered once the delay is over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use rand::Rng;
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{FilterCx, Flow, HttpFilter, LocalResponse, Resume};
use crate::config::units::Dur;

/// Registered name.
pub const NAME: &str = "fault";
/// With `header_control`, a request header naming a delay in milliseconds for this request.
pub static DELAY_HEADER: HeaderName = HeaderName::from_static("x-sluice-fault-delay-ms");
/// With `header_control`, a request header naming an abort status for this request.
pub static ABORT_HEADER: HeaderName = HeaderName::from_static("x-sluice-fault-abort");
/// Longest delay a request header may ask for, unless `max_header_delay:` says otherwise.
pub const DEFAULT_MAX_HEADER_DELAY: Dur = Dur::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    delay: Option<DelayConfig>,
    #[serde(default)]
    abort: Option<AbortConfig>,
    #[serde(default)]
    header_control: bool,
    #[serde(default = "default_max_header_delay")]
    max_header_delay: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayConfig {
    duration: Dur,
    #[serde(default = "hundred")]
    percentage: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortConfig {
    #[serde(default = "default_abort_status")]
    status: u16,
    #[serde(default = "hundred")]
    percentage: f64,
    #[serde(default)]
    body: String,
}

fn hundred() -> f64 {
    100.0
}
fn default_abort_status() -> u16 {
    503
}
fn default_max_header_delay() -> Dur {
    DEFAULT_MAX_HEADER_DELAY
}

/// A share of requests, as a fraction in [0, 1].
#[derive(Clone, Copy, Debug)]
struct Share(f64);

impl Share {
    fn parse(percentage: f64, what: &str) -> Result<Share, String> {
        if !(0.0..=100.0).contains(&percentage) {
            return Err(format!(
                "{what}.percentage must be between 0 and 100 (got {percentage}); e.g. `percentage: 5` for one request in twenty"
            ));
        }
        Ok(Share(percentage / 100.0))
    }

    fn hit(self) -> bool {
        if self.0 >= 1.0 {
            true
        } else if self.0 <= 0.0 {
            false
        } else {
            rand::thread_rng().gen::<f64>() < self.0
        }
    }
}

#[derive(Debug)]
struct Abort {
    status: StatusCode,
    body: Bytes,
    share: Share,
}

/// The built filter.
pub struct Fault {
    delay: Option<(Duration, Share)>,
    abort: Option<Abort>,
    header_control: bool,
    max_header_delay: Duration,
}

/// Factory registered as `fault`.
///
/// # Errors
/// Unknown keys, percentages outside 0–100, an abort status outside 400–599, or nothing to inject.
pub fn factory(
    config: Option<&serde_json::Value>,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    if c.delay.is_none() && c.abort.is_none() && !c.header_control {
        return Err(
            "the fault filter has nothing to inject; give it `delay: { duration: 100ms, percentage: 10 }`, `abort: { status: 503, percentage: 5 }` or `header_control: true`"
                .to_string(),
        );
    }
    let delay = match c.delay {
        Some(d) => Some((d.duration.get(), Share::parse(d.percentage, "delay")?)),
        None => None,
    };
    let abort = match c.abort {
        Some(a) => Some(Abort {
            status: abort_status(a.status).ok_or_else(|| {
                format!(
                    "abort.status must be between 400 and 599 (got {}); e.g. `status: 503`",
                    a.status
                )
            })?,
            body: Bytes::from(a.body),
            share: Share::parse(a.percentage, "abort")?,
        }),
        None => None,
    };
    Ok(Arc::new(Fault {
        delay,
        abort,
        header_control: c.header_control,
        max_header_delay: c.max_header_delay.get(),
    }))
}

fn abort_status(code: u16) -> Option<StatusCode> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
}

impl Fault {
    /// The delay for this request: a valid header (with header control) wins over the config.
    fn pick_delay(&self, cx: &FilterCx<'_>) -> Option<Duration> {
        if self.header_control {
            let ms = cx
                .ex
                .request
                .headers
                .get(&DELAY_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(ms) = ms {
                return Some(Duration::from_millis(ms).min(self.max_header_delay));
            }
        }
        let (d, share) = self.delay?;
        share.hit().then_some(d)
    }

    /// The abort for this request: a valid header (with header control) wins over the config.
    fn pick_abort(&self, cx: &FilterCx<'_>) -> Option<LocalResponse> {
        if self.header_control {
            let status = cx
                .ex
                .request
                .headers
                .get(&ABORT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u16>().ok())
                .and_then(abort_status);
            if let Some(status) = status {
                return Some(LocalResponse::new(status, "fault_abort"));
            }
        }
        let a = self.abort.as_ref()?;
        if !a.share.hit() {
            return None;
        }
        let mut r = LocalResponse::new(a.status, "fault_abort").with_body(a.body.clone());
        if !a.body.is_empty() {
            r = r.with_header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        Some(r)
    }
}

impl HttpFilter for Fault {
    fn name(&self) -> &str {
        NAME
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let delay = self.pick_delay(cx).filter(|d| !d.is_zero());
        let abort = self.pick_abort(cx);
        match (delay, abort) {
            (None, None) => Flow::Continue,
            (None, Some(r)) => Flow::respond(r),
            (Some(d), abort) => Flow::Pause(Box::pin(async move {
                tokio::time::sleep(d).await;
                let resume: Resume = Box::new(move |_cx| match abort {
                    Some(r) => Flow::respond(r),
                    None => Flow::Continue,
                });
                resume
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::filter::test_support::{build, exchange, get, is_continue, local};
    use crate::filter::Exchange;

    fn with_headers(h: &[(&str, &str)]) -> Exchange {
        let mut b = http::Request::builder();
        for (n, v) in h {
            b = b.header(*n, *v);
        }
        exchange("192.0.2.1:1", b.body(()).unwrap())
    }

    /// Run a phase; when it pauses, wait for the pause and resume it.
    fn run(flow: Flow, ex: &mut Exchange) -> (Flow, bool) {
        match flow {
            Flow::Pause(pending) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let resume = rt.block_on(pending);
                (resume(&mut ex.cx(0)), true)
            }
            other => (other, false),
        }
    }

    #[test]
    fn delay_pauses_then_continues() {
        let f = build(factory, "delay: { duration: 20ms }").unwrap();
        let mut ex = get("192.0.2.1:1");
        let start = Instant::now();
        let flow = f.on_request_headers(&mut ex.cx(0));
        let (after, paused) = run(flow, &mut ex);
        assert!(paused);
        assert!(is_continue(&after));
        // tokio's sleep never wakes early.
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn abort_answers_locally_with_body() {
        let f = build(factory, "abort: { status: 502, body: 'injected' }").unwrap();
        let r = local(f.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.body, "injected");
        assert_eq!(r.details, "fault_abort");
    }

    #[test]
    fn delay_then_abort() {
        let f = build(factory, "{delay: {duration: 1ms}, abort: {}}").unwrap();
        let mut ex = get("192.0.2.1:1");
        let flow = f.on_request_headers(&mut ex.cx(0));
        let (after, paused) = run(flow, &mut ex);
        assert!(paused);
        assert_eq!(local(after).status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn percentages_select_a_share() {
        let never = build(factory, "abort: { percentage: 0 }").unwrap();
        let always = build(factory, "abort: { percentage: 100 }").unwrap();
        let half = build(factory, "abort: { percentage: 50 }").unwrap();
        let mut aborted = 0;
        for _ in 0..2000 {
            assert!(is_continue(
                &never.on_request_headers(&mut get("192.0.2.1:1").cx(0))
            ));
            local(always.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
            if !is_continue(&half.on_request_headers(&mut get("192.0.2.1:1").cx(0))) {
                aborted += 1;
            }
        }
        // 2000 fair coin flips land outside 800..1200 with probability below 1e-18.
        assert!((800..1200).contains(&aborted), "{aborted}");
    }

    #[test]
    fn headers_control_faults_only_when_enabled() {
        let f = build(factory, "{header_control: true, max_header_delay: 5ms}").unwrap();
        let mut ex = get("192.0.2.1:1");
        assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));

        let mut ex = with_headers(&[("x-sluice-fault-abort", "418")]);
        assert_eq!(
            local(f.on_request_headers(&mut ex.cx(0))).status,
            StatusCode::IM_A_TEAPOT
        );
        // Invalid values are ignored.
        let mut ex = with_headers(&[
            ("x-sluice-fault-abort", "200"),
            ("x-sluice-fault-delay-ms", "soon"),
        ]);
        assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));

        // The asked delay is capped by max_header_delay, and the resume continues.
        let mut ex = with_headers(&[("x-sluice-fault-delay-ms", "3600000")]);
        let flow = f.on_request_headers(&mut ex.cx(0));
        let (after, paused) = run(flow, &mut ex);
        assert!(paused && is_continue(&after));

        let off = build(factory, "abort: { percentage: 0 }").unwrap();
        let mut ex = with_headers(&[("x-sluice-fault-abort", "503")]);
        assert!(is_continue(&off.on_request_headers(&mut ex.cx(0))));
    }

    #[test]
    fn bad_configs_say_how_to_fix() {
        let err = |y: &str| build(factory, y).err().unwrap();
        assert!(err("").contains("nothing to inject"));
        assert!(err("abort: { percentage: 101 }")
            .contains("abort.percentage must be between 0 and 100"));
        assert!(err("delay: { duration: 1s, percentage: -1 }").contains("delay.percentage"));
        assert!(err("delay: { percentage: 10 }").contains("missing field `duration`"));
        assert!(err("delay: { duration: 10 }").contains("no unit"));
        assert!(err("abort: { status: 200 }").contains("between 400 and 599"));
        assert!(err("abort: { code: 503 }").contains("unknown field `code`"));
    }
}
