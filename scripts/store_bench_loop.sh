#!/bin/sh
# The store benchmark's loop-device method (docs/performance.md, "Choosing
# the store"): a 1 GiB ext4 filesystem on a loop device whose image lives on
# the real disk (under target/), so /sys/block/loopN/stat counts only this
# benchmark's writes, the ext4 journal's included. Needs root (losetup,
# mount). Usage: scripts/store_bench_loop.sh
set -eu
cd "$(dirname "$0")/.."
cargo build --release --example store_bench
img="target/store-bench.img"
mnt="$(mktemp -d)"
truncate -s 1G "$img"
mkfs.ext4 -q -F "$img"
dev="$(losetup -f --show "$img")"
cleanup() {
    umount "$mnt" 2>/dev/null || true
    losetup -d "$dev" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT
mount "$dev" "$mnt"
target/release/examples/store_bench "$mnt" --device "$(basename "$dev")"
