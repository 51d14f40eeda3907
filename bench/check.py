"""The link bandwidth `dlvm check` measures with gloo, against plain TCP sockets on the same
nodes in the same run: every node streams to its right-hand neighbour at once (the check's
first exchange), like an iperf run per link.

    .venv/bin/python bench/check.py [--runs 3] [--nodes 3] [--megabytes 256]

A ratio near 1 says the check's numbers are the links' own, not gloo's overhead; the whole
check's wall time is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics

from _harness import (
    Bench,
    check,
    install_signal_handlers,
    local_cluster,
    machine,
    median,
    spread,
    table,
)

# Run on every node by `dlvm exec`: listen, then stream MEGABYTES to the next node; print
# the receive rate (GB/s) of the stream that arrived.
SOCKET_TEST = r"""
import os, socket, threading, time
ips = os.environ["DLVM_NODE_IPS"].split(); rank = int(os.environ["DLVM_NODE_RANK"])
size, port, chunk = {size}, 29391, bytes(1 << 20)
server = socket.create_server((ips[rank], port)); result = []
def receive():
    conn, _ = server.accept(); got = 0; start = None
    while got < size:
        data = conn.recv(1 << 20)
        if not data: break
        start = start or time.perf_counter(); got += len(data)
    result.append(got / (time.perf_counter() - start) / 1e9)
thread = threading.Thread(target=receive); thread.start(); time.sleep(1.0)
out = socket.create_connection((ips[(rank + 1) % len(ips)], port)); sent = 0
while sent < size: out.sendall(chunk); sent += len(chunk)
out.close(); thread.join(); print("socket", result[0])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=256)
    args = parser.parse_args()
    install_signal_handlers()
    program = SOCKET_TEST.format(size=args.megabytes << 20)
    gloo, plain, walls = [], [], []
    with Bench() as bench, local_cluster(bench, "bench", args.nodes) as cluster:
        for run in range(args.runs):
            timing, done = bench.dlvm("check", cluster.name, "--json")
            check(done, "dlvm check")
            nodes = json.loads(done.stdout)["nodes"]
            gloo.append(statistics.median(float(node["receive_gbs"]) for node in nodes))
            walls.append(timing.wall)
            _, done = bench.dlvm("exec", cluster.name, "--", f"python3 -c {shlex.quote(program)}")
            check(done, "socket test")
            rates = [
                float(line.split()[-1]) for line in done.stdout.splitlines() if "socket" in line
            ]
            plain.append(statistics.median(rates))
            print(f"# run {run + 1}: check {gloo[-1]:.3f} GB/s, sockets {plain[-1]:.3f} GB/s")
    rows = [
        [
            "dlvm check, gloo (median node's best incoming link)",
            f"{median(gloo):.3f}",
            spread(gloo),
        ],
        ["plain TCP stream per link", f"{median(plain):.3f}", spread(plain)],
    ]
    print(f"\n{machine()}; {args.nodes} local nodes, {args.runs} runs\n")
    print(table(["what", "GB/s", "range"], rows))
    print(f"\ncheck / sockets: {median(gloo) / median(plain):.2f}x; ", end="")
    print(f"whole `dlvm check` {median(walls):.1f} s (median)")


if __name__ == "__main__":
    main()
