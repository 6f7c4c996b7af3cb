#!/usr/bin/env python3
"""A device beside a flood from its own address: how many of its pings are
answered. Usage: flood_beside.py GATEWAY_PORT [FLOOD_PER_SEC] [SECONDS]"""
import socket, sys, threading, time

port = int(sys.argv[1]); rate = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
secs = float(sys.argv[3]) if len(sys.argv) > 3 else 5
gw = ("127.0.0.1", port)
stop = False

def flood():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    batch = max(rate // 100, 1)
    while not stop:
        for _ in range(batch):
            s.sendto(b"\x02\x16", gw)  # PINGREQ from a port with no session
        time.sleep(0.01)

dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dev.bind(("127.0.0.1", 0)); dev.settimeout(1.0)
cid = b"beside"
dev.sendto(bytes([6 + len(cid), 0x04, 0x04, 0x01, 0, 60]) + cid, gw)
print("connack:", dev.recv(64).hex())
t = threading.Thread(target=flood); t.start()
time.sleep(0.2)
sent = answered = 0
end = time.time() + secs
while time.time() < end:
    dev.sendto(b"\x02\x16", gw); sent += 1
    try:
        if dev.recv(64) == b"\x02\x17": answered += 1
    except socket.timeout:
        pass
    time.sleep(0.1)
stop = True; t.join()
print(f"pings sent {sent}, answered {answered}")
