#!/usr/bin/env python3
"""A program that does not link upcache and opens cache NAME in DIR as PROTOCOL.md section 8
describes: join the server in the connection file if it answers, else start one with
`upcache serve NAME --dir DIR --detach` (which runs the election, so racing starters get one
server) and use the connection-file line it prints.

usage: starter.py UPCACHE DIR NAME [SERVE OPTIONS...]
prints one JSON line: {"pid": server pid, "address": ..., "ran_serve": bool}
"""
import json
import os
import socket
import subprocess
import sys


def read_info(path):
    """The connection file's JSON, or None if absent, still being written, or not upcache's."""
    try:
        with open(path, "rb") as f:
            text = f.read(64 * 1024)
    except FileNotFoundError:
        return None
    if not text.endswith(b"\n"):
        return None
    info = json.loads(text)
    return info if "token" in info else None


def answers(info):
    """Whether something accepts connections at the server's address."""
    address = info["address"]
    try:
        if address.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(address[len("unix://"):])
        else:
            s = socket.create_connection((info["host"], info["port"]), timeout=5)
        s.close()
        return True
    except OSError:
        return False


def main():
    exe, directory, name = sys.argv[1:4]
    options = sys.argv[4:]
    path = os.path.join(directory, "upcache-%s.json" % name)
    info = read_info(path)
    ran_serve = False
    if info is None or not answers(info):
        ran_serve = True
        r = subprocess.run(
            [exe, "serve", name, "--dir", directory, "--detach"] + options,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        if r.returncode != 0:
            sys.stderr.write(r.stderr.decode(errors="replace"))
            sys.exit(r.returncode)
        info = json.loads(r.stdout)
        # The printed line is the connection file's line.
        assert read_info(path) == info, (read_info(path), info)
    print(json.dumps({"pid": info["pid"], "address": info["address"], "ran_serve": ran_serve}))


if __name__ == "__main__":
    main()
