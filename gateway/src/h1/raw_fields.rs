//! A response's header fields passed through as received: when nothing on the proxy path reads
//! the upstream response's fields (no filter phase after the request, an HTTP/1.1 client), the
//! field lines go from the upstream head to the client's head as byte ranges, without a
//! `HeaderMap` in between. Building that map (a name lookup, a hashed insert and a shared
//! value per field) and writing it back was a tenth of a proxied request's instructions.
//!
//! Only the common shape goes this way: every line ends with CRLF, `Connection` lists no field
//! names, no `Upgrade`, and no `Transfer-Encoding` beside a `Content-Length`. Anything else
//! takes the map path, which handles every case.
//!
//! Filters that say they can ([`crate::filter::HttpFilter::takes_raw_response`], the wasm
//! plugins) also see such a response. Its fields are then the raw lines followed by the
//! fields filters added: a field the plugin adds, or sets when the upstream did not send it,
//! goes after the upstream's lines as a line of its own (while there is room, else into the
//! otherwise empty map), and anything else first turns the lines into map entries
//! ([`materialize`]).

use bytes::Bytes;
use http::header::HeaderName;

use super::head::{scan_known, Known, Scan};

/// Hop-by-hop lines cut out of a block at most (each cut may split it once more).
const MAX_CUTS: usize = 3;

/// Room for the lines filters add (`name: value` and CRLF each): a response usually gets one
/// or two short ones (a marker, a cache status). Adding a field this way is a copy of its
/// bytes, where a map costs a hashed insert into a map taken for it; a field that does not fit
/// goes into the map. 39 bytes (and a tag) keep `RawFields` at 128 bytes, which the proxy moves
/// with a few vector stores: with 64, the unfiltered path paid 50 instructions more for the
/// copies. The room is only zeroed when a first line is added.
const EXTRA_ROOM: usize = 39;

/// The field lines of an upstream response head to forward, as pieces of the head.
#[derive(Clone, Debug)]
pub struct RawFields {
    head: Bytes,
    /// `(start, end)` of each piece of `head` to write, in order; each ends with CRLF.
    pieces: [(u32, u32); MAX_CUTS + 1],
    len: u8,
    /// How many field lines the pieces and `extra` hold.
    count: u16,
    /// Lines filters added after the upstream's, as they are written (`extra_len` bytes).
    extra: Option<[u8; EXTRA_ROOM]>,
    extra_len: u8,
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
            count: 0,
            extra: None,
            extra_len: 0,
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
                    raw.push_piece(piece_start, start)?;
                }
                piece_start = end;
            } else {
                raw.count += 1;
            }
        }
        if block_end > piece_start {
            raw.push_piece(piece_start, block_end)?;
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

    fn push_piece(&mut self, start: usize, end: usize) -> Option<()> {
        let slot = self.pieces.get_mut(usize::from(self.len))?;
        *slot = (u32::try_from(start).ok()?, u32::try_from(end).ok()?);
        self.len += 1;
        Some(())
    }

    /// The upstream's field lines to forward, each with its CRLF; the lines filters added
    /// ([`RawFields::added`]) go after them.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces[..usize::from(self.len)]
            .iter()
            .map(|&(s, e)| self.head.get(s as usize..e as usize).unwrap_or_default())
    }

    /// The lines filters added, each with its CRLF.
    pub fn added(&self) -> &[u8] {
        self.extra
            .as_ref()
            .and_then(|e| e.get(..usize::from(self.extra_len)))
            .unwrap_or_default()
    }

    /// Every field line, each with its CRLF: the upstream's, then those filters added.
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces().chain(std::iter::once(self.added()))
    }

    /// Each forwarded field as `(name, value)`: the name as the upstream wrote it, the value
    /// without the whitespace around it (as httparse reads it); then the fields filters added.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        fields_in(self.lines())
    }

    /// Add `name: value` after the other lines, if there is room.
    fn push(&mut self, name: &HeaderName, value: &http::HeaderValue) -> bool {
        let (n, v) = (name.as_str().as_bytes(), value.as_bytes());
        let at = usize::from(self.extra_len);
        let end = at + n.len() + v.len() + 4;
        if end > EXTRA_ROOM {
            return false;
        }
        let Some(line) = self.extra.get_or_insert([0; EXTRA_ROOM]).get_mut(at..end) else {
            return false;
        };
        let (name_part, rest) = line.split_at_mut(n.len());
        name_part.copy_from_slice(n);
        let (sep, rest) = rest.split_at_mut(2);
        sep.copy_from_slice(b": ");
        let (value_part, crlf) = rest.split_at_mut(v.len());
        value_part.copy_from_slice(v);
        crlf.copy_from_slice(b"\r\n");
        // `end` is at most EXTRA_ROOM (39); `count` cannot reach u16::MAX in a head.
        self.extra_len = end as u8;
        self.count = self.count.saturating_add(1);
        true
    }

    /// How many fields are forwarded.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether no field is forwarded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether a forwarded field is named `name` (compared without case). A line's name ends
    /// at its colon (httparse allows no space before it in a response).
    pub fn contains(&self, name: &[u8]) -> bool {
        let n = name.len();
        for piece in self.lines() {
            let mut line = piece;
            while line.len() > n {
                if line[n] == b':' && line[..n].eq_ignore_ascii_case(name) {
                    return true;
                }
                match memchr::memchr(b'\n', line) {
                    Some(end) => line = &line[end + 1..],
                    None => break,
                }
            }
        }
        false
    }
}

/// The fields of `lines` (each ending with CRLF) as `(name, value)`, the value without the
/// whitespace around it.
fn fields_in<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    lines
        .flat_map(|p| p.split_inclusive(|&b| b == b'\n'))
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r\n")?;
            let colon = memchr::memchr(b':', line)?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
}

/// Whether `parts` is a response whose upstream fields are still raw lines.
pub fn is_raw(parts: &http::response::Parts) -> bool {
    parts.extensions.get::<RawFields>().is_some()
}

/// Every field of `parts` as `(name, value)`: its raw lines first, if it has any, then its
/// map's entries (names lowercase).
pub fn all_fields(parts: &http::response::Parts) -> impl Iterator<Item = (&[u8], &[u8])> {
    parts
        .extensions
        .get::<RawFields>()
        .into_iter()
        .flat_map(RawFields::fields)
        .chain(
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        )
}

/// Change one field of `parts`: replace every value of `name` with `value` (`replace`), add
/// `value` to them, or remove them (`value` none). While the fields are raw lines, a change
/// that needs no line changed stays out of them: a name the framing does not depend on (see
/// `frames_or_hops`) that the lines lack is set, and an added value is added, after the lines
/// (as a line of its own while the map is empty and the line fits, else in the map); removing
/// such a name only looks at the map. Anything else turns the lines into map entries first.
pub fn edit(
    parts: &mut http::response::Parts,
    name: &HeaderName,
    value: Option<&http::HeaderValue>,
    replace: bool,
) {
    let map_empty = parts.headers.is_empty();
    if let Some(raw) = parts.extensions.get_mut::<RawFields>() {
        let plain = !frames_or_hops(name);
        let stays =
            plain && ((value.is_some() && !replace) || !raw.contains(name.as_str().as_bytes()));
        if !stays {
            materialize(parts);
        } else if let Some(v) = &value {
            // Nothing comes after the lines yet: the field can be a line too.
            if map_empty && raw.push(name, v) {
                return;
            }
        }
    }
    let h = &mut parts.headers;
    if h.capacity() == 0 && value.is_some() {
        // The map of a raw response is empty and never allocated: take a spare one.
        *h = super::head::new_map(4);
    }
    edit_map(h, name, value, replace);
}

/// [`edit`] on a plain map.
pub fn edit_map(
    h: &mut http::HeaderMap,
    name: &HeaderName,
    value: Option<&http::HeaderValue>,
    replace: bool,
) {
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
}

/// Whether a field is one the proxy frames the message with, or a hop-by-hop one, or `Date`
/// (the fields `Known` tells apart, which the server writes from what it knows).
fn frames_or_hops(name: &HeaderName) -> bool {
    use http::header::{
        CONNECTION, CONTENT_LENGTH, DATE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
        TRANSFER_ENCODING, UPGRADE,
    };
    [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        UPGRADE,
        TE,
        TRAILER,
        DATE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Turn the raw lines of `parts`, if it has any, into entries of its map, ahead of the entries
/// already there (which came after them): from then on the map holds every field. Values stay
/// slices of the upstream head (no copy).
pub fn materialize(parts: &mut http::response::Parts) {
    let Some(raw) = parts.extensions.remove::<RawFields>() else {
        return;
    };
    let later = std::mem::take(&mut parts.headers);
    let mut map = super::head::new_map(raw.len() + later.len());
    for (name, value) in fields_in(raw.pieces()) {
        // httparse accepted the name as a token, which `http` accepts too.
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        map.append(name, super::head::parsed_value(&raw.head, value));
    }
    // The added lines were written from a `HeaderName` and a `HeaderValue`: both parse back.
    for (name, value) in fields_in(std::iter::once(raw.added())) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    let mut last: Option<HeaderName> = None;
    for (name, value) in later {
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = &last {
            map.append(n.clone(), value);
        }
    }
    parts.headers = map;
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

    /// [`super::edit`] with owned arguments, as the tests build them.
    fn edit(
        p: &mut http::response::Parts,
        name: HeaderName,
        value: Option<http::HeaderValue>,
        replace: bool,
    ) {
        super::edit(p, &name, value.as_ref(), replace);
    }

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

    /// A response head as the proxy holds it on the raw path: `head`'s forwarded lines in its
    /// extensions, its map empty.
    fn raw_parts(head: &'static [u8]) -> http::response::Parts {
        let (_, raw) = raw_path(head);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.extensions.insert(raw);
        parts
    }

    fn texts<'a>(it: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(String, String)> {
        it.map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nX-Multi: a\r\n\
                          Content-Length:  3 \r\nX-Empty:\r\nx-multi:\tb\r\n\r\n";

    #[test]
    fn fields_are_read_from_the_lines() {
        let (_, raw) = raw_path(HEAD);
        assert_eq!(
            texts(raw.fields()),
            pairs(&[
                ("Server", "up"),
                ("X-Multi", "a"),
                ("Content-Length", "3"),
                ("X-Empty", ""),
                ("x-multi", "b"),
            ])
        );
        assert_eq!(raw.len(), 5);
        assert!(!raw.is_empty());
        assert!(raw.contains(b"x-multi") && raw.contains(b"SERVER"));
        assert!(!raw.contains(b"connection") && !raw.contains(b"x-mult"));
        let (_, none) = raw_path(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!((none.len(), none.is_empty()), (0, true));
        assert_eq!(none.fields().count(), 0);
    }

    #[test]
    fn edits_stay_out_of_the_lines_when_they_can() {
        let name = |n: &'static str| http::HeaderName::from_static(n);
        let value = |v: &'static str| Some(http::HeaderValue::from_static(v));
        // A new name, an added value, a name removed that the lines lack: still raw, the
        // change in lines of its own after the upstream's (the map stays empty).
        let mut p = raw_parts(HEAD);
        edit(&mut p, name("x-new"), value("n"), true);
        edit(&mut p, name("x-multi"), value("c"), false);
        edit(&mut p, name("x-absent"), None, true);
        assert!(is_raw(&p));
        assert_eq!(p.headers.len(), 0);
        let lines: Vec<u8> = p
            .extensions
            .get::<RawFields>()
            .map(|r| r.lines().flatten().copied().collect())
            .unwrap_or_default();
        assert!(
            lines.ends_with(b"x-multi:\tb\r\nx-new: n\r\nx-multi: c\r\n"),
            "{}",
            String::from_utf8_lossy(&lines)
        );
        assert_eq!(p.extensions.get::<RawFields>().map(RawFields::len), Some(7));
        assert_eq!(
            texts(all_fields(&p)),
            pairs(&[
                ("Server", "up"),
                ("X-Multi", "a"),
                ("Content-Length", "3"),
                ("X-Empty", ""),
                ("x-multi", "b"),
                ("x-new", "n"),
                ("x-multi", "c"),
            ])
        );
        // Replacing what the lines have makes them map entries first: one value left.
        edit(&mut p, name("x-multi"), value("d"), true);
        assert!(!is_raw(&p));
        let got: Vec<_> = p.headers.get_all("x-multi").iter().collect();
        assert_eq!(got, ["d"]);
        assert_eq!(p.headers["server"], "up");
        assert_eq!(p.headers["x-new"], "n");
        assert_eq!(p.headers.len(), 5);

        // Removing what the lines have.
        let mut p = raw_parts(HEAD);
        edit(&mut p, name("server"), None, true);
        assert!(!is_raw(&p));
        assert!(!p.headers.contains_key("server"));
        assert_eq!(p.headers.len(), 4);

        // A framing or date field, even absent from the lines, makes them map entries.
        for n in ["content-length", "transfer-encoding", "date", "connection"] {
            let mut p = raw_parts(HEAD);
            edit(&mut p, name(n), value("1"), false);
            assert!(!is_raw(&p), "{n}");
        }
    }

    #[test]
    fn added_lines_past_their_room_go_into_the_map_in_order() {
        let name = |n: &'static str| http::HeaderName::from_static(n);
        let mut p = raw_parts(HEAD);
        // 39 bytes of room: two 17-byte lines fit, the third goes into the map, and so does
        // everything after it (the map comes after the lines when written).
        assert!(std::mem::size_of::<RawFields>() <= 128);
        let v = http::HeaderValue::from_static("01");
        for n in ["x-added-one", "x-added-two", "x-added-333", "x-a"] {
            edit(&mut p, name(n), Some(v.clone()), false);
        }
        assert!(is_raw(&p));
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(names, ["x-added-333", "x-a"]);
        let all: Vec<String> = all_fields(&p)
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            all[5..],
            ["x-added-one", "x-added-two", "x-added-333", "x-a"]
        );
        // Setting an added name makes everything map entries, in the same order, one value.
        edit(
            &mut p,
            name("x-added-two"),
            Some(http::HeaderValue::from_static("2")),
            true,
        );
        assert!(!is_raw(&p));
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(
            names,
            [
                "server",
                "x-multi",
                "content-length",
                "x-empty",
                "x-added-one",
                "x-added-two",
                "x-added-333",
                "x-a"
            ]
        );
        assert_eq!(p.headers["x-added-two"], "2");
        assert_eq!(p.headers["x-added-one"], "01");
        assert_eq!(p.headers.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn materialized_lines_come_before_later_entries() {
        let mut p = raw_parts(HEAD);
        p.headers
            .append("x-multi", http::HeaderValue::from_static("c"));
        p.headers
            .append("x-late", http::HeaderValue::from_static("1"));
        p.headers
            .append("x-late", http::HeaderValue::from_static("2"));
        materialize(&mut p);
        assert!(!is_raw(&p));
        let multi: Vec<_> = p.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b", "c"]);
        let late: Vec<_> = p.headers.get_all("x-late").iter().collect();
        assert_eq!(late, ["1", "2"]);
        assert_eq!(p.headers["content-length"], "3");
        assert_eq!(p.headers["x-empty"], "");
        assert_eq!(p.headers.len(), 8);
        // Once is enough: a map without raw lines stays as it is.
        let before = p.headers.clone();
        materialize(&mut p);
        assert_eq!(p.headers, before);
    }
}
