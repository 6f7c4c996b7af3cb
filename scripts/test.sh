#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Rust installed:
# installs what the tests need when it is missing (mosquitto and its clients;
# systemd-analyze, which checks the unit; /bin/kill, which its ExecReload
# runs; chromium, which renders the dashboard in tests/dashboard.rs;
# iproute2 and nats-server for the scale-out tests — all
# from the OS packages), then checks that the pure crates
# (crates/wire, crates/core) depend on no async runtime, and runs rustfmt,
# clippy with warnings as errors, and every test of every workspace crate
# (unit, integration, doc). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# tests/dtls.rs: `openssl s_client` is the third-party DTLS client.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /bin/kill ] || missing+=(procps)
# tests/per_device_e2e.rs resets connections with `ss -K`; tests/scale_out_nats.rs
# puts each host in a network namespace (`ip netns`, as root) and runs a
# NATS cluster.
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> the wire and core crates build without tokio"
# The sans-IO line, enforced by the dependency graph: neither pure crate may
# pull in tokio (or any async runtime), whatever a future change adds.
if cargo tree --locked -p sngate-wire -p sngate-core -e normal --prefix none | grep -E '^(tokio|mio|async-std|smol) '; then
  echo "error: a pure crate depends on an async runtime (above)" >&2
  exit 1
fi
# The wire crate is no_std + alloc: where a bare-metal target is installed
# (`rustup target add thumbv7em-none-eabihf`), prove it builds for one.
if rustup target list --installed 2>/dev/null | grep -q '^thumbv7em-none-eabihf$'; then
  echo "==> sngate-wire builds for thumbv7em-none-eabihf (no_std)"
  cargo build --locked -q -p sngate-wire --target thumbv7em-none-eabihf
fi
echo "==> cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --workspace
