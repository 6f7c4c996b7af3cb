//! The engine fuzz target's stable twin: random operation sequences from
//! several peers (datagrams valid, mutated and raw, clock advances, upstream
//! messages and room, local MQTT inputs) through `sngate_core::chaos`, the
//! interpreter the cargo-fuzz target `engine` uses. The engine must never
//! panic and must stay within its bounds after every operation. Runs a few
//! thousand sequences in seconds; fuzz/README.md says how to run for hours.

use std::time::Instant;

use proptest::prelude::*;
use sngate_core::chaos;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operation_sequences_keep_the_engine_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..4000)
    ) {
        chaos::run(&data, Instant::now());
    }
}

/// A fixed long sequence from a seeded generator, so a run of the suite
/// always covers deep interleavings (thousands of operations) too.
#[test]
fn long_seeded_sequences_keep_the_engine_bounded() {
    let mut state: u64 = 0x5eed_cafe_f00d_0001;
    for _ in 0..50 {
        let data: Vec<u8> = (0..20_000)
            .map(|_| {
                // xorshift64*: deterministic, no dependency.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        let ops = chaos::run(&data, Instant::now());
        assert!(ops > 0);
    }
}

/// Inputs the fuzz target found, replayed on every run. The first was a
/// fault in the invariant, not the engine: a subscription by pre-defined id
/// is held both by name and in the id set, and was counted twice.
#[test]
fn inputs_the_fuzzer_found_replay_cleanly() {
    const PREDEFINED_SUBSCRIPTION_COUNTED_TWICE: &[u8] = &[
        0x3b, 0x3b, 0x3b, 0xae, 0x26, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3b, 0x3b,
        0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2a,
        0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x40, 0x61, 0x2a,
        0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x61, 0x2a, 0x2a, 0x2a, 0x7a, 0x09, 0x3b, 0x3b, 0x3b, 0x3b,
        0x3b, 0x2a, 0x8e, 0xff, 0x27,
    ];
    chaos::run(PREDEFINED_SUBSCRIPTION_COUNTED_TWICE, Instant::now());
}
