//! Throughput of the subscription trie, the gateway's PUBLISH hot path.
//!
//! Builds 10,000 subscriptions (a mix of exact, `+` and `#` filters over a
//! site/device/sensor hierarchy) and matches 1,000,000 topic names against
//! them, printing matches per second. As a baseline measured in the same
//! run, it also times the brute-force scan (`topic::matches` against every
//! filter) on a sample of the names.
//!
//! Run with `cargo run --release --example router_bench`.

use std::hint::black_box;
use std::time::Instant;

use sngate::core::router::SubscriptionTrie;
use sngate::core::topic;

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SITES: u64 = 20;
const DEVICES: u64 = 500;
const SENSORS: [&str; 6] = ["temp", "humidity", "battery", "rssi", "door", "motion"];

fn sensor(rng: &mut Rng) -> &'static str {
    SENSORS[rng.below(SENSORS.len() as u64) as usize]
}

fn main() {
    let mut rng = Rng(0x5eed_f00d_5a7e);
    let subscriptions = 10_000u32;
    let names_to_match = 1_000_000usize;

    // 10,000 filters: 60% exact, 25% with `+`, 15% with `#`.
    let mut filters = Vec::with_capacity(subscriptions as usize);
    for _ in 0..subscriptions {
        let site = rng.below(SITES);
        let dev = rng.below(DEVICES);
        let filter = match rng.below(20) {
            0..=11 => format!("site{site}/dev{dev}/{}", sensor(&mut rng)),
            12..=14 => format!("site{site}/+/{}", sensor(&mut rng)),
            15..=16 => format!("+/dev{dev}/{}", sensor(&mut rng)),
            17 => format!("site{site}/dev{dev}/#"),
            18 => format!("site{site}/#"),
            _ => format!("+/dev{dev}/#"),
        };
        filters.push(filter);
    }
    let mut trie = SubscriptionTrie::new();
    for (i, f) in filters.iter().enumerate() {
        trie.subscribe(f, i as u32 % 2_000, (i % 3) as u8);
    }

    // A pool of names drawn from the same hierarchy, cycled through.
    let pool: Vec<String> = (0..4_096)
        .map(|_| {
            format!(
                "site{}/dev{}/{}",
                rng.below(SITES),
                rng.below(DEVICES),
                sensor(&mut rng)
            )
        })
        .collect();

    let mut out = Vec::new();
    let mut delivered = 0usize;
    let start = Instant::now();
    for i in 0..names_to_match {
        trie.matches(black_box(&pool[i % pool.len()]), &mut out);
        delivered += out.len();
    }
    let elapsed = start.elapsed();
    let rate = names_to_match as f64 / elapsed.as_secs_f64();
    println!(
        "trie: {} subscriptions ({} pairs, {} nodes), {} names in {:.3} s: {:.0} matches/s, {:.0} ns/match, {:.2} subscribers/name",
        subscriptions,
        trie.len(),
        trie.node_count(),
        names_to_match,
        elapsed.as_secs_f64(),
        rate,
        elapsed.as_nanos() as f64 / names_to_match as f64,
        delivered as f64 / names_to_match as f64,
    );

    // Baseline: brute force over every filter, on a smaller sample.
    let sample = 2_000usize;
    let mut brute_hits = 0usize;
    let start = Instant::now();
    for i in 0..sample {
        let name = black_box(&pool[i % pool.len()]);
        brute_hits += filters.iter().filter(|f| topic::matches(f, name)).count();
    }
    let elapsed = start.elapsed();
    println!(
        "baseline brute-force scan: {} names in {:.3} s: {:.0} matches/s ({} filter hits)",
        sample,
        elapsed.as_secs_f64(),
        sample as f64 / elapsed.as_secs_f64(),
        brute_hits,
    );
}
