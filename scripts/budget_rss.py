#!/usr/bin/env python3
"""The memory budget under the issue's attacks, against the real binary.

Each scenario starts a fresh `sngate run` (default configuration, no
store, loopback ports), reads the gateway's VmRSS, runs the attack, waits
until the gateway has taken it in, and reads VmRSS again together with the
bound's counter on /metrics:

  slow-reader   a `mosquitto_sub -t '#'` that never reads (SIGSTOP), then
                600 x 1 MB publishes (mosquitto_pub -l)
  away          a persistent session (mosquitto_sub -c -q 1) that is away,
                then 600 x 1 MB QoS 1 publishes to it
  retained      400 x 1 MB retained messages on distinct topics
  topics        300 devices from 127.0.0.1..127.0.1.44, each REGISTERing
                1,000 names of 1.9 KB (the rate limit paces them)
  subscriptions 300 devices SUBSCRIBing 100 filters of 1.9 KB each, and
                the size of /status

Usage: scripts/budget_rss.py [path/to/sngate] [scenario...]
(default: target/debug/sngate, every scenario). Needs mosquitto_sub and
mosquitto_pub on PATH (or /usr/sbin).
"""

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

BIN = "target/debug/sngate"
MB = 1 << 20


def start(binary):
    proc = subprocess.Popen(
        [binary, "run", "--udp", "127.0.0.1:0", "--broker", "127.0.0.1:0",
         "--http", "127.0.0.1:0", "--state-dir", "off",
         "--log-format", "text", "--log-level", "warn,sngate=info"],
        stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "SNGATE_CONFIG")})
    addrs = {}
    for line in proc.stderr:
        for key, needle in (("udp", "MQTT-SN listening on UDP"), ("http", "HTTP endpoint listening"),
                            ("broker", "MQTT broker listening on TCP")):
            if needle in line:
                addrs[key] = line.rsplit("addr=", 1)[1].strip()
        if len(addrs) == 3:
            break
    # Keep draining its log so it never blocks on a full pipe.
    import threading
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, addrs


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metrics(addrs):
    with urllib.request.urlopen(f"http://{addrs['http']}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(page, name, labels=""):
    key = f"{name}{{{labels}}}" if labels else name
    for line in page.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


def settle(pid, seconds=1.0):
    """Waits until RSS stops moving (the gateway has taken the input in)."""
    last, stable = rss(pid), 0
    while stable < 3:
        time.sleep(seconds / 3)
        now = rss(pid)
        stable = stable + 1 if abs(now - last) < 256 * 1024 else 0
        last = now
    return last


def port(addr):
    return addr.rsplit(":", 1)[1]


def mqtt_flood(addrs, topic, count, qos=0, retain=False):
    line = b"x" * 999_999 + b"\n"
    args = ["mosquitto_pub", "-p", port(addrs["broker"]), "-t", topic, "-l", "-q", str(qos)]
    if retain:
        args.append("-r")
    p = subprocess.Popen(args, stdin=subprocess.PIPE)
    for _ in range(count):
        p.stdin.write(line)
    p.stdin.close()
    p.wait(timeout=600)


def slow_reader(addrs, pid):
    sub = subprocess.Popen(["mosquitto_sub", "-p", port(addrs["broker"]), "-t", "#"],
                           stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    os.kill(sub.pid, signal.SIGSTOP)
    before = settle(pid)
    mqtt_flood(addrs, "big", 600)
    after = settle(pid)
    page = metrics(addrs)
    os.kill(sub.pid, signal.SIGKILL)
    drops = sample(page, "sngate_broker_dropped_total", 'reason="slow_client"')
    return before, after, f"slow_client drops {drops:.0f}"


def away(addrs, pid):
    sub = subprocess.Popen(["mosquitto_sub", "-p", port(addrs["broker"]), "-t", "away/#",
                            "-c", "-i", "away-client", "-q", "1"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    sub.send_signal(signal.SIGINT)
    sub.wait(timeout=10)
    before = settle(pid)
    mqtt_flood(addrs, "away/x", 600, qos=1)
    after = settle(pid)
    page = metrics(addrs)
    drops = sample(page, "sngate_drops_total", 'reason="queue_full"')
    return before, after, f"queue_full drops {drops:.0f}"


def retained(addrs, pid):
    before = settle(pid)
    payload = "/tmp/sngate-budget-1mb"
    with open(payload, "wb") as f:
        f.write(b"x" * 999_999)
    for i in range(400):
        subprocess.run(["mosquitto_pub", "-p", port(addrs["broker"]), "-t", f"r/{i}",
                        "-r", "-f", payload], check=True)
    os.remove(payload)
    after = settle(pid)
    page = metrics(addrs)
    hits = sample(page, "sngate_limit_hits_total", 'limit="limits.max_retained_bytes"')
    kept = sample(page, "sngate_retained_messages")
    return before, after, f"retained kept {kept:.0f} (with $SYS), refused {hits:.0f}"


def sn_packet(msg_type, body):
    n = len(body) + 2
    if n < 256:
        return bytes([n, msg_type]) + body
    return b"\x01" + struct.pack(">H", n + 2) + bytes([msg_type]) + body


def devices(addrs, pid, make, per_device, label):
    host, udp = addrs["udp"].rsplit(":", 1)
    gw = (host, int(udp))
    socks = []
    for d in range(300):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{d // 250}.{d % 250 + 1}", 0))
        s.settimeout(5)
        s.sendto(sn_packet(0x04, b"\x04\x01" + struct.pack(">H", 600) + f"flood-{d}".encode()), gw)
        s.recv(16)
        socks.append(s)
    before = settle(pid)
    # Paced under the per-source rate limit (100/s per address, burst 200):
    # one packet per device per round, every device in turn.
    for i in range(per_device):
        for d, s in enumerate(socks):
            s.sendto(make(d, i), gw)
        for s in socks:
            try:
                s.recv(64)
            except socket.timeout:
                pass
        time.sleep(0.011)
    after = settle(pid)
    page = metrics(addrs)
    hits = sample(page, "sngate_limit_hits_total", f'limit="{label}"')
    return before, after, page, hits


def topics(addrs, pid):
    def reg(d, i):
        name = f"t/{d}/{i}/" + "n" * 1890
        return sn_packet(0x0A, struct.pack(">HH", 0, i + 1) + name.encode())
    before, after, _, hits = devices(addrs, pid, reg, 1000, "limits.max_topic_bytes_total")
    return before, after, f"REGISTERs refused at max_topic_bytes_total {hits:.0f}"


def subscriptions(addrs, pid):
    def sub(d, i):
        name = f"s/{d}/{i}/" + "f" * 1890 + "/#"
        return sn_packet(0x12, b"\x20" + struct.pack(">H", i + 1) + name.encode())
    before, after, _, hits = devices(addrs, pid, sub, 100, "limits.max_subscription_bytes_total")
    with urllib.request.urlopen(f"http://{addrs['http']}/status", timeout=30) as r:
        size = len(r.read())
    return before, after, f"SUBSCRIBEs refused {hits:.0f}, /status {size / 1e6:.1f} MB"


SCENARIOS = {
    "slow-reader": slow_reader,
    "away": away,
    "retained": retained,
    "topics": topics,
    "subscriptions": subscriptions,
}


def main():
    args = sys.argv[1:]
    binary = args.pop(0) if args and os.path.exists(args[0]) else BIN
    chosen = args or list(SCENARIOS)
    os.environ["PATH"] += ":/usr/sbin"
    for name in chosen:
        proc, addrs = start(binary)
        try:
            before, after, what = SCENARIOS[name](addrs, proc.pid)
            print(f"{name:14} RSS {before / MB:6.1f} -> {after / MB:6.1f} MB "
                  f"(+{(after - before) / MB:.1f} MB); {what}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
