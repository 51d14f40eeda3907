"""Sync: `dlvm sync NAME` against 8 parallel `rsync -a` processes, pushing 200 files / 100 MB
to the same 8 local nodes (800 MB delivered).

Makes the payload in a temp dir (random content from a fixed seed, 4 subfolders), brings up an
8-node local cluster whose spec has `files: [{src: payload, dst: ~/payload}]` in a private
DLVM_HOME (brought down at the end, also on an error or Ctrl-C), then 2 x --runs rounds, each
with rsync (both ways) and one of the two ways dlvm runs (median of --runs for each dlvm):

- dlvm: `dlvm sync NAME` over new connections (DLVM_NO_AGENT=1);
- dlvm warm: the same command through the cluster's agent (agent/server.py), which keeps the
  connections open between commands and does the transfer; each timed run must be served by
  it (what a user gets from a second `dlvm sync` or `exec` within the agent's idle time);
- rsync: 8 x `rsync -a -e "ssh -F CFG" payload/ HOST:payload-rsync/` at once, CFG being what
  `dlvm ssh-config NAME` prints (curve25519 key exchange, as dlvm's connections use);
- rsync-pq: the same without the KexAlgorithms line, into payload-rsync-pq/: OpenSSH's
  default post-quantum exchange, as a plain `rsync -a HOST:` uses it (and the baseline did);

and in each round:

- cold: remote folders removed first (`dlvm exec NAME -- rm -rf ...`, not timed), then each;
- delta: one file rewritten locally (same size, new content, new mtime), then each again.

Which goes first alternates. Whole-process wall time; for rsync, from starting the first of
the 8 processes to the end of the last. After the last round, every node's files must have the
same sha256 as the local ones, for every tool. With --minimal-bashrc the nodes' ~/.bashrc
(private to each node) is then emptied and everything measured again, to separate the node's
shell start-up from the tools' own cost.
Run as root from the repository root:

    .venv/bin/python bench/sync.py [--runs 5] [--nodes 8] [--files 200] [--megabytes 100]
                                   [--minimal-bashrc]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from _harness import (
    Bench,
    Cluster,
    Timing,
    agent_served,
    check,
    install_signal_handlers,
    local_cluster,
    machine,
    median,
    pq_config,
    spread,
    table,
    wait_for_agent,
)

SEED = 20261124
RSYNC_DIR = "payload-rsync"
RSYNC_PQ_DIR = "payload-rsync-pq"


def make_payload(root: Path, files: int, total: int, rng: random.Random) -> list[Path]:
    """`files` files of random content, `total` bytes in all, sizes varying 0.5x-1.5x."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(files)]
    scale = total / sum(weights)
    sizes = [int(w * scale) for w in weights]
    sizes[-1] += total - sum(sizes)
    paths = []
    for index, size in enumerate(sizes):
        path = root / f"part{index % 4}" / f"file{index:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def change_one(path: Path, rng: random.Random, stamp: int) -> None:
    """New content of the same size, and an mtime no earlier run has seen."""
    path.write_bytes(rng.randbytes(path.stat().st_size))
    now = int(time.time()) + stamp
    os.utime(path, (now, now))


def rsync_all(bench: Bench, cluster: Cluster, payload: Path, *, pq: bool = False) -> Timing:
    """One `rsync -a` per node, all at once; wall time until the last one ends. `pq`: with
    OpenSSH's default key exchange, into its own folder."""
    ssh = f"ssh -F {pq_config(cluster) if pq else cluster.ssh_config}"
    folder = RSYNC_PQ_DIR if pq else RSYNC_DIR
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["rsync", "-a", "-e", ssh, f"{payload}/", f"{host}:{folder}/"],
            env=bench.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in cluster.hosts
    ]
    failures = []
    for host, process in zip(cluster.hosts, processes, strict=True):
        _, err = process.communicate()
        if process.returncode != 0:
            failures.append(f"{host}: rsync exited {process.returncode}: {err.strip()}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if failures:
        raise RuntimeError("\n".join(failures))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu)


def dlvm_sync(bench: Bench, cluster: Cluster, files_expected: int, *, warm: bool) -> Timing:
    """`dlvm sync NAME`: over new connections, or (warm) through the cluster's agent, which
    must have served it."""
    served = agent_served(bench, cluster) if warm else 0
    timing, done = bench.dlvm("sync", cluster.name, agent=warm)
    check(done, "dlvm sync")
    if warm and agent_served(bench, cluster) != served + 1:
        raise RuntimeError("the agent did not serve this `dlvm sync`")
    match = re.search(r"(\d+) file\(s\) sent", done.stdout)
    sent = int(match.group(1)) if match else -1
    if sent != files_expected:
        raise RuntimeError(f"dlvm sync sent {sent} files, expected {files_expected}: {done.stdout}")
    return timing


def reset(bench: Bench, cluster: Cluster) -> None:
    folders = f"~/payload ~/{RSYNC_DIR} ~/{RSYNC_PQ_DIR}"
    _, done = bench.dlvm("exec", cluster.name, "-q", "--", f"rm -rf {folders}")
    check(done, "removing the remote folders")


def verify(bench: Bench, cluster: Cluster, payload: Path) -> None:
    """Every node holds exactly the local files, byte for byte, from every tool."""
    expected = sorted(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(payload).as_posix()}"
        for p in payload.rglob("*")
        if p.is_file()
    )
    for folder in ("payload", RSYNC_DIR, RSYNC_PQ_DIR):
        _, done = bench.dlvm(
            "exec", cluster.name, "--", f"cd ~/{folder} && find . -type f | sort | xargs sha256sum"
        )
        check(done, f"sha256sum of ~/{folder}")
        found: dict[str, list[str]] = {}
        for line in done.stdout.splitlines():
            node, _, text = line.partition("] ")
            found.setdefault(node.lstrip("["), []).append(text)
        if len(found) != cluster.count:
            raise RuntimeError(f"~/{folder}: only {sorted(found)} answered")
        for node, lines in found.items():
            if sorted(lines) != expected:
                raise RuntimeError(f"{node}: ~/{folder} differs from the local payload")
    print(f"# verified: sha256 of all files on all {cluster.count} nodes match, every tool")


CASES = ("cold", "delta")
TOOLS = ("dlvm", "dlvm-warm", "rsync", "rsync-pq")


def measure(
    bench: Bench, cluster: Cluster, payload: Path, paths: list[Path], runs: int, rng: random.Random
) -> list[list[str]]:
    """--runs rounds of cold then delta for every tool; one table row per case."""
    wall: dict[tuple[str, str], list[float]] = {(t, c): [] for t in TOOLS for c in CASES}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in wall}

    def one(tool: str, case: str) -> None:
        if tool.startswith("dlvm"):
            sent = len(paths) * cluster.count if case == "cold" else cluster.count
            timing = dlvm_sync(bench, cluster, sent, warm=tool == "dlvm-warm")
        else:
            timing = rsync_all(bench, cluster, payload, pq=tool == "rsync-pq")
        wall[tool, case].append(timing.wall)
        cpu[tool, case].append(timing.cpu)

    if not wait_for_agent(bench, cluster):
        raise RuntimeError("the cluster's agent did not start")
    # Both dlvm variants push into the same ~/payload, so a round has one of them and the two
    # rsyncs (alternating which, and the order): each sees empty folders, then one changed file.
    for index in range(2 * runs):
        tools = ("dlvm" if index % 4 < 2 else "dlvm-warm", "rsync", "rsync-pq")
        order = tools if index % 2 == 0 else tools[::-1]
        reset(bench, cluster)
        for tool in order:
            one(tool, "cold")
        change_one(paths[(index * 37) % len(paths)], rng, index + 1)
        for tool in order[::-1]:
            one(tool, "delta")
        print(
            f"# round {index + 1}: "
            + ", ".join(f"{t} {c} {wall[t, c][-1]:.2f}s" for t in order for c in CASES),
            flush=True,
        )
    verify(bench, cluster, payload)
    rows = []
    for case in CASES:
        d, w, r, q = (median(wall[tool, case]) for tool in TOOLS)
        rows.append(
            [
                case,
                f"{d:.2f}",
                f"{w:.2f}",
                f"{r:.2f}",
                f"{q:.2f}",
                f"{d / r:.2f}x",
                f"{w / r:.2f}x",
                f"{d / q:.2f}x",
                f"{w / q:.2f}x",
                " / ".join(f"{median(cpu[tool, case]):.2f}" for tool in TOOLS),
                " / ".join(spread(wall[tool, case]) for tool in TOOLS),
            ]
        )
    return rows


HEADERS = (
    "case",
    "dlvm s",
    "dlvm warm s",
    "rsync s",
    "rsync-pq s",
    "dlvm/rsync",
    "warm/rsync",
    "dlvm/rsync-pq",
    "warm/rsync-pq",
    "client CPU s dlvm/warm/rsync/pq",
    "range s dlvm / warm / rsync / pq",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case of each dlvm (median)")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument(
        "--minimal-bashrc",
        action="store_true",
        help="also measure with an empty ~/.bashrc on the nodes",
    )
    args = parser.parse_args()
    install_signal_handlers()
    rng = random.Random(SEED)
    print(f"# sync benchmark; {machine()}")
    tables: dict[str, list[list[str]]] = {}
    with Bench() as bench:
        payload = bench.root / "payload"
        paths = make_payload(payload, args.files, args.megabytes * 1_000_000, rng)
        print(f"# payload: {len(paths)} files, {args.megabytes} MB (seed {SEED})", flush=True)
        with local_cluster(bench, "bench", args.nodes, files=[("payload", "~/payload")]) as cluster:
            tables["as-is"] = measure(bench, cluster, payload, paths, args.runs, rng)
            if args.minimal_bashrc:
                _, done = bench.dlvm("exec", cluster.name, "-q", "--", ": > ~/.bashrc")
                check(done, "emptying ~/.bashrc")
                tables["minimal"] = measure(bench, cluster, payload, paths, args.runs, rng)
    print()
    print(
        f"## {args.files} files / {args.megabytes} MB to {args.nodes} nodes: `dlvm sync` vs "
        f"{args.nodes} x `rsync -a` at once; median of {args.runs}; {machine()}"
    )
    print(table(HEADERS, tables["as-is"]))
    if "minimal" in tables:
        print()
        print("## the same with an empty ~/.bashrc on the nodes")
        print(table(HEADERS, tables["minimal"]))
    print()
    print(
        "cold: empty remote folders; delta: after one file changed (each tool sends only it).\n"
        "dlvm: new connections (DLVM_NO_AGENT=1); dlvm warm: through the cluster's agent, which\n"
        "holds the connections and does the transfer (its CPU is not in the client column).\n"
        "rsync runs OpenSSH with the config of `dlvm ssh-config` (curve25519 key exchange);\n"
        "rsync-pq the same without that pin: OpenSSH's default post-quantum exchange, as a\n"
        "plain `rsync -a` uses it.\n"
        "client CPU: the tool's processes on this side (dlvm; rsync + ssh), not the nodes'.\n"
        "ratio: dlvm/rsync wall time, below 1 means dlvm is faster. target: 1.0x or less."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
