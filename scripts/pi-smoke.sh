#!/usr/bin/env bash
# Smoke test of the Raspberry Pi (aarch64) build, without a Pi: the
# cross-compiled binary runs under qemu-user on this machine.
#   1. builds target/aarch64-unknown-linux-gnu/release/sngate (cross-build.sh);
#   2. starts it under `qemu-aarch64 -L /usr/aarch64-linux-gnu`, listening on
#      127.0.0.1 on an ephemeral port (read back from its log);
#   3. speaks MQTT-SN to it over UDP: CONNECT -> CONNACK, SUBSCRIBE -> SUBACK,
#      REGISTER -> REGACK, PUBLISH -> the same message routed back,
#      DISCONNECT -> DISCONNECT;
#   4. stops it with SIGTERM and expects exit status 0.
# Every wait has a deadline. Installs qemu-user and python3 when missing.
#
# Not part of scripts/test.sh or CI: the emulated build and run take several
# minutes. Run it by hand after changes that could behave differently on ARM
# (see docs/raspberry-pi.md). SNGATE_SMOKE_SKIP_BUILD=1 reuses the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cross-env.sh
source scripts/cross-env.sh

START_TIMEOUT=60 # seconds for the emulated gateway to bind its socket
REPLY_TIMEOUT=10 # seconds for each answer
STOP_TIMEOUT=20  # seconds for a graceful exit after SIGTERM

command -v qemu-aarch64 >/dev/null 2>&1 || apt_install qemu-user
command -v python3 >/dev/null 2>&1 || apt_install python3
apt_install libc6-arm64-cross # the target's dynamic loader and libc, for -L

bin="${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/sngate"
if [ "${SNGATE_SMOKE_SKIP_BUILD:-}" != 1 ] || [ ! -x "$bin" ]; then
  scripts/cross-build.sh aarch64
fi
# ELF e_machine (bytes 18-19) is 0xB7 for aarch64.
[ "$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' ')" = b700 ] || {
  echo "$bin is not an aarch64 executable" >&2
  exit 1
}

log="$(mktemp)"
state="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$log"; rm -rf "$state"
}
trap cleanup EXIT

echo "==> qemu-aarch64 $bin run --udp 127.0.0.1:0"
started=$(date +%s%N)
qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" run --udp 127.0.0.1:0 --broker 127.0.0.1:0 --state-dir "$state" \
  --log-format text --log-level info 2>"$log" &
pid=$!

addr=""
for _ in $(seq $((START_TIMEOUT * 5))); do
  addr="$(sed -n 's/.*listening on UDP.*addr=\([0-9.:]*\).*/\1/p' "$log" | head -n 1)"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$addr" ]; then
  echo "the gateway did not report its UDP address within ${START_TIMEOUT}s; its log:" >&2
  cat "$log" >&2
  exit 1
fi
echo "==> listening on $addr after $((($(date +%s%N) - started) / 1000000)) ms"

python3 - "$addr" "$REPLY_TIMEOUT" <<'EOF'
"""One MQTT-SN v1.2 client session against the emulated gateway."""
import socket
import struct
import sys

host, port = sys.argv[1].rsplit(":", 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(float(sys.argv[2]))
sock.connect((host, int(port)))


def packet(msg_type, body):
    return bytes([len(body) + 2, msg_type]) + body


def exchange(name, data, expect_type):
    sock.send(data)
    try:
        reply = sock.recv(2048)
    except socket.timeout:
        sys.exit(f"no answer to {name} within {sys.argv[2]} s")
    if len(reply) < 2 or reply[1] != expect_type:
        sys.exit(f"{name}: expected message type {expect_type:#04x}, got {reply.hex()}")
    print(f"    {name:<10} -> {reply.hex()}")
    return reply


# CONNECT: CleanSession, protocol 0x01, keep-alive 60 s. CONNACK: accepted.
reply = exchange("CONNECT", packet(0x04, bytes([0x04, 0x01]) + struct.pack(">H", 60) + b"pi-smoke"), 0x05)
assert reply == bytes([0x03, 0x05, 0x00]), f"CONNACK not accepted: {reply.hex()}"
# SUBSCRIBE QoS 0 to a topic name. SUBACK: accepted, with its topic id.
reply = exchange("SUBSCRIBE", packet(0x12, bytes([0x00]) + struct.pack(">H", 1) + b"pi/smoke"), 0x13)
assert reply[-1] == 0x00 and reply[5:7] == struct.pack(">H", 1), f"SUBACK: {reply.hex()}"
# REGISTER the same name. REGACK: accepted, msg id echoed.
reply = exchange("REGISTER", packet(0x0A, struct.pack(">HH", 0, 2) + b"pi/smoke"), 0x0B)
topic_id, msg_id, code = struct.unpack(">HHB", reply[2:7])
assert code == 0 and msg_id == 2, f"REGACK: {reply.hex()}"
# PUBLISH QoS 0 on that id: routed back to this client, as we subscribed.
reply = exchange("PUBLISH", packet(0x0C, bytes([0x00]) + struct.pack(">HH", topic_id, 0) + b"hello from qemu"), 0x0C)
assert reply.endswith(b"hello from qemu"), f"routed PUBLISH: {reply.hex()}"
# DISCONNECT, answered by DISCONNECT.
exchange("DISCONNECT", packet(0x18, b""), 0x18)
EOF

echo "==> SIGTERM"
kill -TERM "$pid"
status=""
for _ in $(seq $((STOP_TIMEOUT * 5))); do
  if ! kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
    pid=""
    break
  fi
  sleep 0.2
done
if [ -z "$status" ]; then
  echo "the gateway did not exit within ${STOP_TIMEOUT}s of SIGTERM" >&2
  exit 1 # the EXIT trap kills it
fi
if [ "$status" -ne 0 ]; then
  echo "the gateway exited with status $status; its log:" >&2
  cat "$log" >&2
  exit 1
fi
echo "pi-smoke: ok — aarch64 sngate under qemu-user answered CONNECT/SUBSCRIBE/REGISTER/PUBLISH/DISCONNECT and exited 0 on SIGTERM"
