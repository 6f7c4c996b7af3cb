//! What one broker password check costs: times `PasswordHash::verify` (the
//! work a CONNECT with a user name does) at several PBKDF2 iteration counts,
//! next to a baseline measured in the same run: one HMAC-SHA256 of the same
//! password, which is what each iteration costs twice over (inner and outer
//! SHA-256 block).
//!
//! Run with `cargo run --release --example hash_cost`; on a Raspberry Pi to
//! choose `sngate passwd --iterations`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sngate::security::PasswordHash;
use sngate::security::password::DEFAULT_ITERATIONS;

fn time(rounds: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    start.elapsed() / rounds
}

fn main() {
    let password = b"correct horse battery staple";
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"salt-salt-salt-s");
    let hmac = time(100_000, || {
        black_box(ring::hmac::sign(&key, black_box(password)));
    });
    println!(
        "baseline: one HMAC-SHA256: {:.2} µs",
        hmac.as_secs_f64() * 1e6
    );
    for iterations in [1_000, DEFAULT_ITERATIONS, 100_000, 600_000] {
        let Ok(hash) = PasswordHash::new(password, iterations) else {
            eprintln!("cannot hash");
            return;
        };
        let rounds = (2_000_000 / iterations).max(3);
        let each = time(rounds, || {
            assert!(hash.verify(black_box(password)));
        });
        println!(
            "verify, {iterations:>7} iterations: {:>8.2} ms  ({:.0} HMACs' worth){}",
            each.as_secs_f64() * 1e3,
            each.as_secs_f64() / hmac.as_secs_f64(),
            if iterations == DEFAULT_ITERATIONS {
                "  <- default"
            } else {
                ""
            }
        );
    }
}
