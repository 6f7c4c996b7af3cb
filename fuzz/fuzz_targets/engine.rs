//! Feeds arbitrary operation sequences to the gateway engine through
//! `sngate_core::chaos` (the same interpreter as the stable harness
//! `crates/core/tests/engine_chaos.rs`): datagrams from several peers (raw, valid and
//! mutated), clock advances, upstream messages and room, local MQTT inputs.
//! The engine must never panic, and after every operation it must hold no
//! more than its limits allow (sessions ≤ max_clients, queued bytes within
//! the per-client and total bounds, timer entries ≤ sessions, indexes
//! consistent) — `chaos::run` panics otherwise.

#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One start instant for the whole run: deterministic replays.
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    sngate_core::chaos::run(data, start);
});
