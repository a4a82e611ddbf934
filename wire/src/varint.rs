//! LEB128 varints (unsigned) and zigzag varints (signed), as in Kafka's record format.

/// Errors decoding a varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("varint runs past the end of the buffer")]
    Truncated,
    #[error("varint is longer than 10 bytes")]
    Overlong,
}

/// Append `value` as an unsigned LEB128 varint.
pub fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append `value` as a zigzag varint.
pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    put_u64(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Number of bytes `value` takes as an unsigned varint.
pub fn len_u64(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Number of bytes `value` takes as a zigzag varint.
pub fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)) as u64)
}

/// Decode an unsigned varint at the start of `buf`; returns the value and its length.
pub fn get_u64(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (index, byte) in buf.iter().enumerate() {
        if index >= 10 {
            return Err(VarintError::Overlong);
        }
        let bits = u64::from(byte & 0x7f);
        if index == 9 && bits > 1 {
            return Err(VarintError::Overlong);
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    Err(VarintError::Truncated)
}

/// Decode a zigzag varint at the start of `buf`; returns the value and its length.
pub fn get_i64(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, len) = get_u64(buf)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        put_u64(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        put_i64(&mut out, -1);
        assert_eq!(out, [0x01]);
        out.clear();
        put_i64(&mut out, 1);
        assert_eq!(out, [0x02]);
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(get_u64(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get_u64(&[0xff; 11]), Err(VarintError::Overlong));
        assert_eq!(get_u64(&[]), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(unsigned in any::<u64>(), signed in any::<i64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, unsigned);
            prop_assert_eq!(out.len(), len_u64(unsigned));
            prop_assert_eq!(get_u64(&out), Ok((unsigned, out.len())));
            out.clear();
            put_i64(&mut out, signed);
            prop_assert_eq!(out.len(), len_i64(signed));
            prop_assert_eq!(get_i64(&out), Ok((signed, out.len())));
        }
    }
}
