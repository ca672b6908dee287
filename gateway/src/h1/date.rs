//! The `Date` header of responses that carry none (RFC 9110 §6.6.1: an origin server with a clock
//! must send it), rendered once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Cached {
    second: u64,
    text: [u8; 29],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: 0, text: [0; 29] }) };
}

/// Append `date: <IMF-fixdate>\r\n`.
pub fn write_date(out: &mut impl bytes::BufMut) {
    let second = now_second();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if text.len() == 29 {
                c.text.copy_from_slice(text.as_bytes());
                c.second = second;
            } else {
                out.put_slice(b"date: ");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
                return;
            }
        }
        out.put_slice(b"date: ");
        out.put_slice(&c.text);
        out.put_slice(b"\r\n");
    });
}

/// Seconds since the epoch from the coarse real-time clock (no clocksource read: the tick's
/// resolution is far finer than the header's).
fn now_second() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 {
        return u64::try_from(ts.tv_sec).unwrap_or(0);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_an_imf_fixdate() {
        let mut out = Vec::new();
        super::write_date(&mut out);
        super::write_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v = l.strip_prefix("date: ").unwrap();
            assert!(httpdate::parse_http_date(v).is_ok(), "{v}");
        }
    }
}
