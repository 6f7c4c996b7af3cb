//! Feeds arbitrary bytes to the MQTT-SN decoder. The decoder must never panic;
//! whatever it accepts must encode again, `encoded_len` must agree with the
//! encoding, and the encoding must decode to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sngate_wire::v1::{decode, encode, encoded_len};

fuzz_target!(|data: &[u8]| {
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
});
