#!/usr/bin/env python3
"""Prints the STATS JSON of the upcache server a connection file names (PROTOCOL.md, sections 3
and 4), for scripts whose server holds no election lock (`loadgen foreground`)."""
import json
import socket
import struct
import sys


def frame(code, rid, key=b"", value=b"", arg=0):
    return b"UC" + bytes([1, code]) + struct.pack("<IIIQ", rid, len(key), len(value), arg) + key + value


def read_frame(s):
    def exact(n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            if not chunk:
                raise SystemExit("server closed the connection")
            b += chunk
        return b
    h = exact(24)
    _, kind, code, rid, klen, vlen, arg = struct.unpack("<2sBBIIIQ", h)
    return code, exact(klen), exact(vlen), arg


info = json.loads(open(sys.argv[1]).read())
addr = info["address"]
if addr.startswith("tcp://"):
    host, port = addr[len("tcp://"):].rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
else:
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr[len("unix://"):])
s.sendall(frame(0x01, 1, info["token"].encode(), arg=1) + frame(0x10, 2))
read_frame(s)
code, _, value, _ = read_frame(s)
print(value.decode())
