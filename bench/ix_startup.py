#!/usr/bin/env python3
"""Start-up cost of local pack indexes (ix/ files): time from starting
gocacher to the answer of its first get, with N index files of M entries
each in the cache dir, against an empty cache dir. The get misses its -a
file, so it waits for the index files to be read.

Usage: bench/ix_startup.py [GOCACHER] [FILES] [ENTRIES] [RUNS]
Prints one line per case: median and max milliseconds over RUNS.
"""
import base64, json, os, secrets, statistics, subprocess, sys, tempfile, time

gocacher = sys.argv[1] if len(sys.argv) > 1 else "target/dist/gocacher"
files = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
entries = int(sys.argv[3]) if len(sys.argv) > 3 else 100
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 7


def first_get_ms(cache_dir):
    start = time.perf_counter()
    p = subprocess.Popen([gocacher, "--cache-dir", cache_dir], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    p.stdout.readline()  # capabilities
    aid = base64.b64encode(secrets.token_bytes(32)).decode()
    p.stdin.write((json.dumps({"ID": 1, "Command": "get", "ActionID": aid}) + "\n\n").encode())
    p.stdin.flush()
    p.stdout.readline()
    took = (time.perf_counter() - start) * 1e3
    p.stdin.write(b'{"ID":2,"Command":"close"}\n\n')
    p.stdin.close()
    p.wait()
    return took


def fill(cache_dir, n, m):
    ix = os.path.join(cache_dir, "ix")
    os.makedirs(ix, exist_ok=True)
    for f in range(n):
        lines = [f"gocacher1 {secrets.token_hex(32)} {secrets.token_hex(32)} 1234 1700000000000000000\n"
                 for _ in range(m)]
        with open(os.path.join(ix, f"{f:032x}"), "w") as out:
            out.writelines(lines)


for label, n, m in [("empty cache dir", 0, 0), (f"{files} index files x {entries} entries", files, entries)]:
    with tempfile.TemporaryDirectory() as d:
        fill(d, n, m)
        first_get_ms(d)  # warm the page cache
        ms = [first_get_ms(d) for _ in range(runs)]
        print(f"{label}: first get answered after {statistics.median(ms):.1f} ms median, {max(ms):.1f} ms max ({runs} runs)")
