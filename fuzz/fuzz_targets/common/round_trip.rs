//! The codec property both decode targets check, for either codec: whatever
//! `decode` accepts must `encode` again, `encoded_len` must agree with the
//! encoding, and the encoding must decode to the same packet.

use bytes::BytesMut;
use core::fmt::{Debug, Display};

/// Panics (a fuzzer crash) if `data` decodes but does not round-trip.
pub fn check<P, DE, EE>(
    data: &[u8],
    decode: fn(&[u8]) -> Result<P, DE>,
    encode: fn(&P, &mut BytesMut) -> Result<(), EE>,
    encoded_len: fn(&P) -> Result<usize, EE>,
) where
    P: Debug + PartialEq,
    DE: Debug + PartialEq,
    EE: Debug + Display + PartialEq,
{
    let Ok(packet) = decode(data) else {
        return;
    };
    let mut buf = BytesMut::new();
    if let Err(e) = encode(&packet, &mut buf) {
        panic!("decoded {packet:?} from {data:02x?} but cannot encode it: {e}");
    }
    assert_eq!(
        encoded_len(&packet),
        Ok(buf.len()),
        "encoded_len of {packet:?}"
    );
    assert_eq!(
        decode(&buf).as_ref(),
        Ok(&packet),
        "re-decode of {:02x?}",
        &buf[..]
    );
}
