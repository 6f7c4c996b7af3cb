//! Feeds arbitrary bytes to the MQTT-SN decoder. The decoder must never panic;
//! whatever it accepts must encode again, `encoded_len` must agree with the
//! encoding, and the encoding must decode to the same packet.

#![no_main]

#[path = "common/round_trip.rs"]
mod round_trip;

use libfuzzer_sys::fuzz_target;
use sngate_wire::v1::{decode, encode, encoded_len};

fuzz_target!(|data: &[u8]| {
    round_trip::check(data, decode, encode, encoded_len);
});
