//! The proxy-wasm encoding of a header list (`proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs`, local responses and callouts): a u32 count, a (key length,
//! value length) u32 pair per header, then each key and value followed by a NUL byte; integers
//! little-endian.

/// Encodes `pairs` for the host.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let text: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + text);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Decodes what the host sent; `None` when the bytes are not a well-formed list.
pub fn decode(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut text = 4usize.checked_add(count.checked_mul(8)?)?;
    if text > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (klen, vlen) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let key = bytes.get(text..text.checked_add(klen)?)?.to_vec();
        text += klen + 1;
        let value = bytes.get(text..text.checked_add(vlen)?)?.to_vec();
        text += vlen + 1;
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips_and_keeps_order_and_repeats() {
        let pairs = [
            (":status", "200"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x", ""),
        ];
        let bytes = encode(&pairs);
        // count, four length pairs, then "key\0value\0" four times.
        assert_eq!(
            bytes.len(),
            4 + 4 * 8 + (7 + 3 + 2) + (10 + 3 + 2) * 2 + (1 + 2)
        );
        let back = decode(&bytes).expect("well formed");
        let back: Vec<(&[u8], &[u8])> = back.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let want: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn truncated_or_lying_lists_are_rejected() {
        let bytes = encode(&[("key", "value")]);
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
        assert_eq!(decode(&[]), Some(Vec::new()));
    }
}
