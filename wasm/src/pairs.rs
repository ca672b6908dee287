//! The spec's serialized pairs format for header maps:
//! `u32 count`, then `count` × (`u32 key_len`, `u32 value_len`), then each key and value followed by
//! a NUL byte. All integers little-endian.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Serialize `(key, value)` pairs.
pub fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    encode_iter(|| pairs.iter().copied())
}

/// Serialize the pairs `pairs()` yields (walked three times: sizes, lengths, bytes), in one
/// allocation and without collecting them first.
pub fn encode_iter<'a, I>(pairs: impl Fn() -> I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let (count, data_len) = pairs().fold((0usize, 0usize), |(n, len), (k, v)| {
        (n + 1, len + k.len() + v.len() + 2)
    });
    let mut out = Vec::with_capacity(4 + count * 8 + data_len);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs() {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Serialize a header map (repeated names appear once per value, in order).
pub fn encode_map(map: &HeaderMap) -> Vec<u8> {
    encode_iter(|| {
        map.iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
    })
}

/// Serialize a header map with the HTTP/2-style pseudo headers Envoy shows plugins first.
pub fn encode_with_pseudo(pseudo: &[(&[u8], &[u8])], map: &HeaderMap) -> Vec<u8> {
    encode_iter(|| {
        pseudo.iter().copied().chain(
            map.iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        )
    })
}

/// Owned header pairs as plugins send them (names and values are bytes, not yet validated).
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a serialized map could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairsError {
    #[error("serialized pairs are truncated")]
    Truncated,
}

/// Parse serialized pairs into owned byte strings.
///
/// # Errors
/// [`PairsError::Truncated`] when a length points past the end of `data`.
pub fn decode(data: &[u8]) -> Result<Pairs, PairsError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let count = read_u32(data, 0)? as usize;
    // Each pair takes at least 10 bytes (two lengths and two NULs): reject absurd counts early.
    if count > data.len() / 10 + 1 {
        return Err(PairsError::Truncated);
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        let k = read_u32(data, 4 + i * 8)? as usize;
        let v = read_u32(data, 8 + i * 8)? as usize;
        sizes.push((k, v));
    }
    let mut pos = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key = data
            .get(pos..pos + k)
            .ok_or(PairsError::Truncated)?
            .to_vec();
        pos += k + 1;
        let value = data
            .get(pos..pos + v)
            .ok_or(PairsError::Truncated)?
            .to_vec();
        pos += v + 1;
        if pos > data.len() {
            return Err(PairsError::Truncated);
        }
        out.push((key, value));
    }
    Ok(out)
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, PairsError> {
    let b = data.get(at..at + 4).ok_or(PairsError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Build a header map from decoded pairs, skipping pseudo headers and invalid names or values
/// (a plugin cannot put an invalid header on the wire).
pub fn to_header_map(pairs: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if k.first() == Some(&b':') {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
            map.append(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"bb", b""), (b"a", b"22")];
        let enc = encode(&pairs);
        let dec = decode(&enc).unwrap_or_default();
        let want: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(dec, want);
    }

    #[test]
    fn truncated_is_an_error() {
        let enc = encode(&[(b"key".as_slice(), b"value".as_slice())]);
        assert_eq!(decode(&enc[..enc.len() - 3]), Err(PairsError::Truncated));
        assert_eq!(decode(&[5, 0, 0, 0]), Err(PairsError::Truncated));
    }
}
