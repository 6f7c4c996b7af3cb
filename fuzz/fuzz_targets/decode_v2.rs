//! Feeds arbitrary bytes to the MQTT-SN 2.0 decoder and to the one-port
//! version rule. Neither may panic; whatever the 2.0 decoder accepts must
//! encode again, `encoded_len` must agree with the encoding, and the encoding
//! must decode to the same packet; a datagram the 1.2 decoder accepts must be
//! classified 1.2 (the rule never reads a 1.2 datagram as 2.0).

#![no_main]

#[path = "common/round_trip.rs"]
mod round_trip;

use libfuzzer_sys::fuzz_target;
use sngate_wire::v2::{decode, encode, encoded_len};
use sngate_wire::version::{FirstDatagram, classify_first_datagram};

fuzz_target!(|data: &[u8]| {
    let verdict = classify_first_datagram(data);
    if sngate_wire::v1::decode(data).is_ok() {
        assert!(
            matches!(verdict, FirstDatagram::V1_2 { .. }),
            "valid 1.2 {data:02x?} classified {verdict:?}"
        );
    }
    round_trip::check(data, decode, encode, encoded_len);
});
