//! The store's own benchmark: what the outbox workload costs the disk per
//! durable commit — the measurement behind "Choosing the store" in
//! docs/performance.md, here in the repository so the choice can be
//! checked again — and what the outbox linger's write pattern costs.
//!
//! The real store (`sngate::store::Store`: fjall, one batch synced with
//! fdatasync per commit, as the driver commits) in a fresh directory per
//! run. Workloads, each 2,000 commits after a warm-up of 1,000 live records:
//!
//! - `outbox K` (K = 1, 16, 128): each commit appends K outbox records (key:
//!   u64 sequence; value: a 30-byte topic and a 64-byte payload, about
//!   100 bytes encoded) and, in the same commit, deletes the K oldest, so
//!   1,000 stay live — every message written before it is acknowledged
//!   (`[store] linger_ms = 0`, or the broker away);
//! - `linger P` (P = 10, 1 %): the outbox linger's pattern with one message
//!   per commit opportunity: only P % of the messages are written (those
//!   the broker did not acknowledge within the linger), each deleted in the
//!   next commit once the broker acknowledged it; the other messages cost
//!   nothing. Bytes are per message (written or not).
//!
//! Bytes written are counted two ways:
//! - `write_bytes` of `/proc/self/io` (always): what this process dirtied,
//!   the filesystem's journal excluded;
//! - with `--device loopN`: sectors written to that block device
//!   (`/sys/block/loopN/stat`, field 7), so **the ext4 journal's writes are
//!   included** — the method of `scripts/store_bench_loop.sh`, which makes
//!   a 1 GiB ext4 filesystem on a loop device whose image lives on the real
//!   disk, mounts it, and runs this there. Nothing else writes to it, so
//!   the figure is this benchmark's alone.
//!
//! Each workload runs 3 times; the median is reported.
//!
//! ```sh
//! cargo run --release --example store_bench [DIR] [--device loopN]
//! sudo scripts/store_bench_loop.sh    # the loop-device method
//! ```
//!
//! DIR defaults to `target/tmp` and must be on a real disk, not a tmpfs.

use std::path::{Path, PathBuf};

use sngate::core::{OutboxRecord, StoreOp, StoredMessage};
use sngate::store::Store;

/// Commits measured per run.
const COMMITS: u64 = 2_000;
/// Live records kept (the outbox of a broker that lags a little).
const LIVE: u64 = 1_000;
/// Runs per workload (the median is reported).
const RUNS: usize = 3;

/// How a run writes.
#[derive(Clone, Copy)]
enum Workload {
    /// K appends and K deletes of the oldest per commit.
    Outbox(u64),
    /// One message per step; one in `every` is written (and deleted in the
    /// next commit), the rest never touch the store.
    Linger { every: u64 },
}

/// What a run wrote.
#[derive(Clone, Copy, Default)]
struct Figures {
    commits: u64,
    messages: u64,
    process_bytes: u64,
    device_bytes: Option<u64>,
}

fn record(seq: u64) -> OutboxRecord {
    OutboxRecord {
        message: StoredMessage {
            topic: format!("site/{:04}/sensor/temperature-00", seq % 10_000),
            payload: vec![b'x'; 64],
            qos: 1,
            retain: false,
        },
        device: None,
    }
}

fn process_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes written to block device `dev` so far (512-byte sectors).
fn device_write_bytes(dev: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

fn commit(store: &Store, ops: &[StoreOp], settled: &[u64]) {
    if let Err(e) = store.commit(ops, settled) {
        panic!("commit: {e}");
    }
}

fn run(dir: &Path, workload: Workload, device: Option<&str>) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    let (store, _) = Store::open(dir).unwrap_or_else(|e| panic!("store: {e}"));
    let mut seq = 0u64;
    // Warm-up: the live records.
    let warm: Vec<StoreOp> = (0..LIVE)
        .map(|_| {
            seq += 1;
            StoreOp::PutOutbox(seq, record(seq))
        })
        .collect();
    commit(&store, &warm, &[]);
    let mut oldest = 1u64;
    let process = process_write_bytes();
    let dev = device.and_then(device_write_bytes);
    let mut figures = Figures::default();
    match workload {
        Workload::Outbox(k) => {
            for _ in 0..COMMITS {
                let ops: Vec<StoreOp> = (0..k)
                    .map(|_| {
                        seq += 1;
                        StoreOp::PutOutbox(seq, record(seq))
                    })
                    .collect();
                let settled: Vec<u64> = (oldest..oldest + k).collect();
                oldest += k;
                commit(&store, &ops, &settled);
                figures.commits += 1;
                figures.messages += k;
            }
        }
        Workload::Linger { every } => {
            // Deletes wait for the next commit (the driver's rule: settled
            // ids alone do not earn a commit).
            let mut settled = Vec::new();
            for _ in 0..COMMITS * every {
                seq += 1;
                figures.messages += 1;
                if !seq.is_multiple_of(every) {
                    continue;
                }
                commit(&store, &[StoreOp::PutOutbox(seq, record(seq))], &settled);
                figures.commits += 1;
                settled = vec![seq];
            }
        }
    }
    drop(store);
    figures.process_bytes = process_write_bytes().saturating_sub(process);
    figures.device_bytes = match (device, dev) {
        (Some(d), Some(before)) => device_write_bytes(d).map(|after| after.saturating_sub(before)),
        _ => None,
    };
    let _ = std::fs::remove_dir_all(dir);
    figures
}

fn median(mut runs: Vec<Figures>, key: impl Fn(&Figures) -> u64) -> Figures {
    runs.sort_by_key(|f| key(f));
    runs[runs.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut base = PathBuf::from("target/tmp");
    let mut device = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--device" => device = args.next(),
            _ => base = PathBuf::from(arg),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&base) {
        panic!("{}: {e}", base.display());
    }
    println!(
        "store in {}{}",
        base.display(),
        device
            .as_deref()
            .map_or(String::new(), |d| format!(", counting writes to /dev/{d}"))
    );
    println!(
        "| workload | commits | written per commit (write_bytes) | per message | written to the device per commit (journal included) | per message |"
    );
    println!("|---|---|---|---|---|---|");
    let workloads = [
        ("outbox, 1 record per commit", Workload::Outbox(1)),
        ("outbox, 16 records per commit", Workload::Outbox(16)),
        ("outbox, 128 records per commit", Workload::Outbox(128)),
        (
            "linger, broker lagging for 10 % of messages",
            Workload::Linger { every: 10 },
        ),
        (
            "linger, broker lagging for 1 % of messages",
            Workload::Linger { every: 100 },
        ),
    ];
    for (name, workload) in workloads {
        let runs: Vec<Figures> = (0..RUNS)
            .map(|i| {
                let dir = base.join(format!("store-bench-{}-{i}", std::process::id()));
                run(&dir, workload, device.as_deref())
            })
            .collect();
        let key = |f: &Figures| f.device_bytes.unwrap_or(f.process_bytes);
        let m = median(runs, key);
        let per = |bytes: u64, n: u64| bytes / n.max(1);
        let dev = m
            .device_bytes
            .map_or("–".to_owned(), |b| format!("{} B", per(b, m.commits)));
        let dev_msg = m
            .device_bytes
            .map_or("–".to_owned(), |b| format!("{} B", per(b, m.messages)));
        println!(
            "| {name} | {} | {} B | {} B | {dev} | {dev_msg} |",
            m.commits,
            per(m.process_bytes, m.commits),
            per(m.process_bytes, m.messages),
        );
    }
}
