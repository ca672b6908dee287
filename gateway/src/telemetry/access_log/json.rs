//! Formatting one access log entry as a JSON line, by hand: no intermediate `Value`, one buffer,
//! and header bytes that are not UTF-8 survive as U+FFFD instead of failing the line.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::AccessLogEntry;

/// A typical line is 400–600 bytes; one allocation covers it.
const LINE_CAPACITY: usize = 768;

/// Formats `e` as one JSON object followed by `\n`.
pub(crate) fn format_line(e: &AccessLogEntry<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(LINE_CAPACITY);
    b.extend_from_slice(b"{\"start_time\":\"");
    write_rfc3339_millis(&mut b, e.start_time);
    b.extend_from_slice(b"\",\"duration_ms\":");
    write_millis(&mut b, e.duration);
    b.extend_from_slice(b",\"ttfb_ms\":");
    match e.ttfb {
        Some(t) => write_millis(&mut b, t),
        None => b.extend_from_slice(b"null"),
    }
    str_field(&mut b, "listener", e.listener.as_bytes());
    str_field(&mut b, "route", e.route.as_bytes());
    str_field(&mut b, "cluster", e.cluster.as_bytes());
    b.extend_from_slice(b",\"upstream_addr\":\"");
    if let Some(a) = e.upstream_addr {
        let _ = write!(b, "{a}");
    }
    b.extend_from_slice(b"\",\"client_ip\":\"");
    if let Some(a) = e.client_addr {
        let _ = write!(b, "{}", a.ip());
    }
    let _ = write!(
        b,
        "\",\"client_port\":{}",
        e.client_addr.map_or(0, |a| a.port())
    );
    str_field(&mut b, "method", e.method.as_bytes());
    str_field(&mut b, "authority", e.authority.as_bytes());
    str_field(&mut b, "path", e.path.as_bytes());
    str_field(&mut b, "protocol", protocol(e.protocol).as_bytes());
    let _ = write!(
        b,
        ",\"status\":{},\"bytes_received\":{},\"bytes_sent\":{}",
        e.status, e.bytes_received, e.bytes_sent
    );
    str_field(&mut b, "request_id", e.request_id);
    str_field(&mut b, "user_agent", e.user_agent);
    str_field(&mut b, "referer", e.referer);
    str_field(&mut b, "x_forwarded_for", e.x_forwarded_for);
    str_field(&mut b, "details", e.details.as_bytes());
    str_field(&mut b, "trace_id", e.trace_id.as_bytes());
    str_field(&mut b, "span_id", e.span_id.as_bytes());
    b.extend_from_slice(b"}\n");
    b
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn str_field(b: &mut Vec<u8>, name: &str, value: &[u8]) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":\"");
    escape(b, value);
    b.push(b'"');
}

/// Milliseconds with microsecond precision, e.g. `12.345`.
fn write_millis(b: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    let _ = write!(b, "{}.{:03}", micros / 1000, micros % 1000);
}

/// JSON string escaping of arbitrary bytes: valid UTF-8 passes through, control characters are
/// escaped, and each invalid sequence becomes U+FFFD.
pub(crate) fn escape(b: &mut Vec<u8>, value: &[u8]) {
    for chunk in value.utf8_chunks() {
        for &c in chunk.valid().as_bytes() {
            match c {
                b'"' => b.extend_from_slice(b"\\\""),
                b'\\' => b.extend_from_slice(b"\\\\"),
                b'\n' => b.extend_from_slice(b"\\n"),
                b'\r' => b.extend_from_slice(b"\\r"),
                b'\t' => b.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f => {
                    let _ = write!(b, "\\u{c:04x}");
                }
                c => b.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            b.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

/// `2026-11-25T17:11:15.123Z`. Times before 1970 (a broken clock) print as the epoch.
pub(crate) fn write_rfc3339_millis(b: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        b,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, millis: u64) -> String {
        let mut b = Vec::new();
        write_rfc3339_millis(
            &mut b,
            UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis),
        );
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn timestamps() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(ts(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(ts(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(ts(1_795_626_675, 123), "2026-11-25T17:11:15.123Z");
    }

    #[test]
    fn escaping() {
        let mut b = Vec::new();
        escape(&mut b, b"a\"b\\c\nd\x01\x7f\xffz\xc3\xa9");
        assert_eq!(
            String::from_utf8_lossy(&b),
            "a\\\"b\\\\c\\nd\\u0001\\u007f\u{fffd}z\u{e9}"
        );
    }
}
