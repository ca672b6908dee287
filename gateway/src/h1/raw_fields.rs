//! A response's header fields passed through as received: when nothing on the proxy path reads
//! the upstream response's fields (no filter phase after the request, an HTTP/1.1 client), the
//! field lines go from the upstream head to the client's head as byte ranges, without a
//! `HeaderMap` in between. Building that map (a name lookup, a hashed insert and a shared
//! value per field) and writing it back was a tenth of a proxied request's instructions.
//!
//! Only the common shape goes this way: every line ends with CRLF, `Connection` lists no field
//! names, no `Upgrade`, and no `Transfer-Encoding` beside a `Content-Length`. Anything else
//! takes the map path, which handles every case.

use bytes::Bytes;

use super::head::{scan_known, Known, Scan};

/// Hop-by-hop lines cut out of a block at most (each cut may split it once more).
const MAX_CUTS: usize = 3;

/// The field lines of an upstream response head to forward, as pieces of the head.
#[derive(Clone, Debug)]
pub struct RawFields {
    head: Bytes,
    /// `(start, end)` of each piece of `head` to write, in order; each ends with CRLF.
    pieces: [(u32, u32); MAX_CUTS + 1],
    len: u8,
    /// The `Content-Length` the fields declare.
    pub content_length: Option<u64>,
    /// The fields include `Date`.
    pub has_date: bool,
}

impl RawFields {
    /// The fields of `head` (which httparse parsed into `fields`) as pieces to forward without
    /// the hop-by-hop lines, and what they say about framing; `None` when the head needs the
    /// map path (see the module).
    pub fn of(head: &Bytes, fields: &[httparse::Header<'_>]) -> Option<(RawFields, Scan)> {
        // The block of field lines ends before the empty line.
        let block_end = head.len().checked_sub(2)?;
        if !head.ends_with(b"\r\n\r\n") && !fields.is_empty() {
            return None;
        }
        let base = head.as_ptr() as usize;
        let offset = |f: &httparse::Header<'_>| (f.name.as_ptr() as usize).wrapping_sub(base);
        let mut raw = RawFields {
            head: head.clone(),
            pieces: [(0, 0); MAX_CUTS + 1],
            len: 0,
            content_length: None,
            has_date: false,
        };
        let mut scan = Scan::default();
        let mut piece_start = fields.first().map_or(block_end, offset);
        for (i, f) in fields.iter().enumerate() {
            let start = offset(f);
            let end = fields.get(i + 1).map_or(block_end, offset);
            // Each line through its CRLF (httparse also accepts a bare LF, which is not
            // forwarded as is).
            if start >= end || end > block_end || head.get(end - 2..end) != Some(b"\r\n") {
                return None;
            }
            let kind = Known::of_raw(f.name.as_bytes());
            let hop = scan_known(&mut scan, kind, f.value);
            raw.has_date |= kind == Known::Date;
            let cut = hop
                || matches!(
                    kind,
                    Known::ProxyAuthenticate | Known::ProxyAuthorization | Known::Upgrade
                );
            if cut {
                if start > piece_start {
                    raw.push(piece_start, start)?;
                }
                piece_start = end;
            }
        }
        if block_end > piece_start {
            raw.push(piece_start, block_end)?;
        }
        if scan.names_fields
            || scan.upgrade
            || scan.bad_length
            || (scan.transfer_encoding && scan.content_length.is_some())
        {
            return None;
        }
        raw.content_length = scan.content_length;
        Some((raw, scan))
    }

    fn push(&mut self, start: usize, end: usize) -> Option<()> {
        let slot = self.pieces.get_mut(usize::from(self.len))?;
        *slot = (u32::try_from(start).ok()?, u32::try_from(end).ok()?);
        self.len += 1;
        Some(())
    }

    /// The field lines to forward, each with its CRLF.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces[..usize::from(self.len)]
            .iter()
            .map(|&(s, e)| self.head.get(s as usize..e as usize).unwrap_or_default())
    }
}

thread_local! {
    /// The emptied extensions of the last response written with raw fields: their table stays
    /// allocated for the next one (an insert into fresh extensions allocates the map and its
    /// table).
    static SPARE: std::cell::RefCell<Option<http::Extensions>> =
        const { std::cell::RefCell::new(None) };
}

/// Put `fields` into a response's (empty) extensions, on this thread's spare table if it has
/// one.
pub fn attach(ext: &mut http::Extensions, fields: RawFields) {
    if let Some(spare) = SPARE.with(|s| s.borrow_mut().take()) {
        *ext = spare;
    }
    ext.insert(fields);
}

/// Keep the extensions of a written response as this thread's spare table: emptied (the
/// fields' hold on the upstream head goes), and only when small.
pub fn recycle(mut ext: http::Extensions) {
    if ext.is_empty() || ext.len() > 2 {
        return;
    }
    ext.clear();
    SPARE.with(|s| *s.borrow_mut() = Some(ext));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarded lines of `head` (a response head as received), or `None` for the map path.
    fn forwarded(head: &'static [u8]) -> Option<(String, RawFields)> {
        let head = Bytes::from_static(head);
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut fields);
        assert!(matches!(resp.parse(&head), Ok(s) if s.is_complete()));
        let (raw, _) = RawFields::of(&head, resp.headers)?;
        let text: Vec<u8> = raw.pieces().flat_map(|p| p.iter().copied()).collect();
        Some((String::from_utf8_lossy(&text).into_owned(), raw))
    }

    /// [`forwarded`] for a head that must take the raw path.
    fn raw_path(head: &'static [u8]) -> (String, RawFields) {
        match forwarded(head) {
            Some(r) => r,
            None => panic!("{head:?} took the map path"),
        }
    }

    #[test]
    fn fields_pass_as_received_without_hop_by_hop_lines() {
        let (text, raw) = raw_path(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              Set-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length:  12 \r\nX-Odd:\r\n\
              Proxy-Connection: keep-alive\r\nDATE: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\n",
        );
        assert_eq!(
            text,
            "Server: up\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length:  12 \r\n\
             X-Odd:\r\nDATE: Mon, 07 Dec 2026 10:00:00 GMT\r\n"
        );
        assert_eq!(raw.content_length, Some(12));
        assert!(raw.has_date);
    }

    #[test]
    fn hop_by_hop_lines_at_either_end_and_together() {
        let (text, raw) = forwarded(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nA: 1\r\n\
              Trailer: x\r\nProxy-Authenticate: Basic\r\nB: 2\r\nUpgrade: h2c\r\n\r\n",
        )
        .map_or((String::new(), None), |(t, r)| (t, Some(r)));
        // An `Upgrade` field outside a 101 takes the map path.
        assert!(raw.is_none(), "{text}");
        let (text, raw) = raw_path(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nA: 1\r\n\
              Trailer: x\r\nProxy-Authenticate: Basic\r\nB: 2\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(text, "A: 1\r\nB: 2\r\n");
        assert_eq!(raw.content_length, None);
        assert!(!raw.has_date);
        let (text, _) = raw_path(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(text, "");
        let (text, _) = raw_path(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(text, "");
    }

    #[test]
    fn extensions_are_reused_emptied() {
        let (_, raw) = raw_path(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n");
        let mut ext = http::Extensions::new();
        attach(&mut ext, raw.clone());
        assert!(ext.get::<RawFields>().is_some());
        recycle(ext);
        // Kept, emptied: the fields (and their hold on the upstream head) are gone.
        let kept = SPARE.with(|s| s.borrow().as_ref().map(http::Extensions::len));
        assert_eq!(kept, Some(0));
        // The next response gets the spare, with only its own fields in it.
        let mut next = http::Extensions::new();
        attach(&mut next, raw);
        assert_eq!(next.len(), 1);
        assert!(SPARE.with(|s| s.borrow().is_none()));
        // Nothing to keep from empty extensions.
        recycle(http::Extensions::new());
        assert!(SPARE.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn unusual_heads_take_the_map_path() {
        // Bare LF line ends.
        assert!(forwarded(b"HTTP/1.1 200 OK\nA: 1\n\n").is_none());
        assert!(forwarded(b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n").is_none());
        // `Connection` naming a field, which must go too.
        assert!(forwarded(b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\n\r\n").is_none());
        // Both framings, and a length that does not parse.
        assert!(forwarded(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_none());
        assert!(forwarded(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_none());
        // More hop-by-hop lines apart than pieces.
        assert!(forwarded(
            b"HTTP/1.1 200 OK\r\nA: 1\r\nTE: x\r\nB: 1\r\nTrailer: x\r\nC: 1\r\n\
              Keep-Alive: x\r\nD: 1\r\nProxy-Connection: x\r\nE: 1\r\n\r\n"
        )
        .is_none());
    }
}
