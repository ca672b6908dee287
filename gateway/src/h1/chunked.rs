//! `Transfer-Encoding: chunked` (RFC 9112 §7.1): an incremental decoder over a read buffer, and
//! the framing the encoder writes around each chunk.
//!
//! The decoder never buffers a chunk whole: it hands out whatever part of the current chunk's data
//! is in the buffer (as a `Bytes` split off it, no copy), so a body of any size streams through
//! a bounded buffer. Sizes, extensions and trailers are bounded: a peer cannot make it allocate
//! or spin without limit.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

/// The longest chunk-size line accepted (size, extensions and CRLF), bytes. hyper and Envoy
/// accept about as much; a longer line is an attack or a broken peer.
pub const MAX_SIZE_LINE: usize = 4096;
/// The largest trailer section accepted, bytes.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 64;

/// What the decoder produced from the buffer.
#[derive(Debug)]
pub enum Chunk {
    /// Body data (part of a chunk).
    Data(Bytes),
    /// The last chunk and its trailer section (`None`: no trailers); the body is complete.
    End(Option<HeaderMap>),
    /// More input is needed.
    More,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("invalid trailer section")]
    BadTrailers,
    #[error("trailer section larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: expecting CRLF.
    DataEnd,
    /// After the last chunk: expecting the trailer section (or the final CRLF).
    Trailers,
    /// The body is complete.
    Done,
}

/// Incremental chunked decoder.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder { state: State::Size }
    }

    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from the front of `buf`, consuming what it uses. Returns at most one item; call
    /// again until it returns [`Chunk::More`] (then read more into `buf`) or [`Chunk::End`].
    ///
    /// # Errors
    /// A malformed body: the connection cannot be used any further.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line_end) = find_crlf(buf, MAX_SIZE_LINE)? else {
                        return Ok(Chunk::More);
                    };
                    let size = parse_size(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Chunk::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(ChunkError::MissingCrlf);
                        }
                        return Ok(Chunk::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Chunk::End(None));
                    }
                    let Some(end) = find_double_crlf(buf)? else {
                        return Ok(Chunk::More);
                    };
                    let section = buf.split_to(end + 4).freeze();
                    let trailers = parse_trailers(&section)?;
                    self.state = State::Done;
                    return Ok(Chunk::End(Some(trailers)));
                }
                State::Done => return Ok(Chunk::End(None)),
            }
        }
    }
}

/// Position of the first CRLF in `buf`, within `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(limit)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() >= limit => Err(ChunkError::SizeLineTooLong),
        None => Ok(None),
    }
}

/// Position of the CRLFCRLF that ends a trailer section.
fn find_double_crlf(buf: &[u8]) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(MAX_TRAILERS)];
    match window.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() >= MAX_TRAILERS => Err(ChunkError::TrailersTooLarge),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then optional whitespace and `;` extensions, which
/// are ignored (as every proxy does) but must be printable.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::BadSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = (size << 4) | u64::from(v);
    }
    let rest = &line[digits..];
    let rest = trim_start_ws(rest);
    if !rest.is_empty() && (rest[0] != b';' || rest.iter().any(|b| *b < 0x20 && *b != b'\t')) {
        return Err(ChunkError::BadSize);
    }
    Ok(size)
}

fn trim_start_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

/// The trailer fields of `section` (fields, then the empty line).
fn parse_trailers(section: &Bytes) -> Result<HeaderMap, ChunkError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let parsed = httparse::parse_headers(section, &mut fields);
    let (_, fields) = match parsed {
        Ok(httparse::Status::Complete(r)) => r,
        _ => return Err(ChunkError::BadTrailers),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name =
            http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ChunkError::BadTrailers)?;
        let value = super::head::value_from(section, f.value).ok_or(ChunkError::BadTrailers)?;
        map.append(name, value);
    }
    Ok(map)
}

/// The line that starts a chunk of `len` bytes: hex size and CRLF.
pub fn size_line(len: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with `trailers` (if any) and the final CRLF.
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        super::head::write_fields(t, out);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        // Feed one byte at a time: every state must cope with a split anywhere.
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            loop {
                match d.decode(&mut buf)? {
                    Chunk::Data(data) => body.extend_from_slice(&data),
                    Chunk::End(t) => return Ok((body, t)),
                    Chunk::More => break,
                }
            }
        }
        Err(ChunkError::BadSize)
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let (body, t) =
            decode_all(b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello 0123456789");
        assert!(t.is_none());
    }

    #[test]
    fn decodes_trailers() {
        let (body, t) = decode_all(b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-a: b\r\n\r\n").unwrap();
        assert_eq!(body, b"abc");
        let t = t.unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-a"], "b");
    }

    #[test]
    fn rejects_bad_sizes_and_framing() {
        assert_eq!(decode_all(b"zz\r\n").unwrap_err(), ChunkError::BadSize);
        assert_eq!(decode_all(b"\r\n").unwrap_err(), ChunkError::BadSize);
        assert_eq!(
            decode_all(b"11111111111111111\r\n").unwrap_err(),
            ChunkError::BadSize
        );
        assert_eq!(
            decode_all(b"3\r\nabcX").unwrap_err(),
            ChunkError::MissingCrlf
        );
        assert_eq!(decode_all(b"3 x\r\n").unwrap_err(), ChunkError::BadSize);
        let long = [b'1']
            .iter()
            .chain([b';'; MAX_SIZE_LINE].iter())
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(decode_all(&long).unwrap_err(), ChunkError::SizeLineTooLong);
        assert_eq!(
            decode_all(b"0\r\nno colon here\r\n\r\n").unwrap_err(),
            ChunkError::BadTrailers
        );
    }

    #[test]
    fn large_chunk_streams_in_pieces() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"ffffffff\r\nabc"[..]);
        match d.decode(&mut buf).unwrap() {
            Chunk::Data(data) => assert_eq!(&data[..], b"abc"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.decode(&mut buf).unwrap(), Chunk::More));
    }

    #[test]
    fn size_lines() {
        let mut out = Vec::new();
        size_line(0, &mut out);
        size_line(255, &mut out);
        size_line(4096, &mut out);
        assert_eq!(out, b"0\r\nff\r\n1000\r\n");
    }
}
