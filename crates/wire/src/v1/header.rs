//! The MQTT-SN Length field (fact sheet §1, trap T-8): one byte, or `0x01`
//! followed by a 16-bit big-endian length. The length counts the whole message,
//! Length field included.
//!
//! Owned here so the datagram decoder, the encoder and the stream framings of the
//! serial transport agree on one reading of it.

use super::DecodeError;

/// The largest message the 3-byte Length form can describe.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// The largest total length sent with the 1-byte form.
pub const MAX_SHORT_FORM_LEN: usize = 255;

/// A parsed Length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// The length the field declares: the whole message, this field included.
    pub total: usize,
    /// How many bytes the field itself takes: 1 or 3.
    pub field_len: usize,
}

/// Reads the Length field at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is too short to hold the whole field (a stream
/// reader then waits for more bytes; a datagram decoder reports truncation).
/// A declared length that cannot hold the Length field plus a MsgType byte is an
/// error: 0 in the short form, or below 4 in the long form.
pub fn parse_length(buf: &[u8]) -> Result<Option<Length>, DecodeError> {
    match buf.first() {
        None => Ok(None),
        Some(0x00) => Err(DecodeError::ZeroLength),
        Some(0x01) => match buf.get(1..3) {
            Some(&[hi, lo]) => {
                let total = u16::from_be_bytes([hi, lo]);
                if total < 4 {
                    return Err(DecodeError::LongLengthTooSmall(total));
                }
                Ok(Some(Length {
                    total: usize::from(total),
                    field_len: 3,
                }))
            }
            _ => Ok(None),
        },
        Some(&n) => Ok(Some(Length {
            total: usize::from(n),
            field_len: 1,
        })),
    }
}

/// The size of the Length field needed for a message whose MsgType byte and
/// variable part together take `body_len` bytes.
pub fn field_len_for(body_len: usize) -> usize {
    // The 1-byte form holds totals up to 255: body + 1 <= 255.
    if body_len < MAX_SHORT_FORM_LEN { 1 } else { 3 }
}

/// The total message length for a body (MsgType plus variable part) of `body_len`.
pub fn total_len_for(body_len: usize) -> usize {
    body_len + field_len_for(body_len)
}

/// Appends the Length field for a message of `total` bytes: the short form iff
/// `total` ≤ 255. The caller guarantees `total` ≤ [`MAX_MESSAGE_LEN`].
pub(crate) fn write_length(total: usize, out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    if total <= MAX_SHORT_FORM_LEN {
        out.put_u8(total as u8);
    } else {
        out.put_u8(0x01);
        out.put_u16(total as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_switch_at_255() {
        // 254 body bytes + 1 length byte = 255: still the short form.
        assert_eq!(total_len_for(254), 255);
        // 255 body bytes would need 256 in the short form: long form, 258 in all.
        assert_eq!(total_len_for(255), 258);
        assert_eq!(total_len_for(256), 259);
    }

    #[test]
    fn parse_rejects_impossible_lengths() {
        assert_eq!(parse_length(&[0x00]), Err(DecodeError::ZeroLength));
        assert_eq!(
            parse_length(&[0x01, 0x00, 0x03]),
            Err(DecodeError::LongLengthTooSmall(3))
        );
        assert_eq!(parse_length(&[0x01, 0x00]), Ok(None));
        assert_eq!(parse_length(&[]), Ok(None));
        assert_eq!(
            parse_length(&[0x01, 0x01, 0x02]),
            Ok(Some(Length {
                total: 258,
                field_len: 3
            }))
        );
    }
}
