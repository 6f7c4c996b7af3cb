#!/usr/bin/env bash
# Cross-compiles sngate for the Raspberry Pi, release profile:
#   aarch64  aarch64-unknown-linux-gnu      64-bit Raspberry Pi OS / Debian arm64 (Pi 3, 4, 5, Zero 2 W)
#   armv7    armv7-unknown-linux-gnueabihf  32-bit Raspberry Pi OS / Debian armhf (Pi 2, 3, 4, 5, Zero 2 W)
#   all      both (the default)
# Installs what is missing (see scripts/cross-env.sh: Debian's cross gcc and
# libc, a Rust standard library for the target), builds with
# `cargo build --locked --release --target TRIPLE` (extra arguments are passed
# on to cargo), then prints each binary's path and size.
#
# The linker is set through CARGO_TARGET_<TRIPLE>_LINKER for this run only:
# native builds are unaffected. Docs: docs/raspberry-pi.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cross-env.sh
source scripts/cross-env.sh

which="${1:-all}"
[ "$#" -gt 0 ] && shift
case "$which" in
  all) names=(aarch64 armv7) ;;
  aarch64 | armv7) names=("$which") ;;
  -h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [aarch64|armv7|all] [cargo build arguments...]" >&2
    exit 2
    ;;
esac

# Each target in a subshell, so one target's RUSTC never leaks into the next.
for name in "${names[@]}"; do
  (
    cross_setup "$name"
    echo "==> cargo build --release --target $TRIPLE"
    cargo build --locked --release --target "$TRIPLE" "$@"
    bin="${CARGO_TARGET_DIR:-target}/$TRIPLE/release/sngate"
    size="$(stat -c %s "$bin")"
    stripped="$(mktemp)"
    trap 'rm -f "$stripped"' EXIT
    "$GCC_PREFIX-strip" -o "$stripped" "$bin"
    stripped_size="$(stat -c %s "$stripped")"
    echo "$name: $bin"
    echo "$name: $size bytes ($((size / 1024)) KiB); stripped $stripped_size bytes ($((stripped_size / 1024)) KiB)"
  )
done
