"""`dlvm check` on a node: what its Python, torch and name lookups say (`probe`), and the
bandwidth of the links between the nodes (`bandwidth`, started by torchrun on every node).

Shipped as source and run with the node's own python3: the standard library and torch only.
Every result is one line on stdout, MARKER then a JSON object; dlvm reads nothing else, and
trusts none of it beyond the numbers it checks.

Bandwidth, in three steps, each measured by the receiving process (a receive ends only when
every byte has arrived; a send may end once the data is in a socket buffer):
1. probe: every node sends a small message to the node SHIFT ranks on, for SHIFT 1 and, with
   three nodes or more, -1, so that each node sends on two links and receives on two. A node
   whose sending is slow shows on both its outgoing links, while each of its receivers has a
   fast link from its other side: that tells the slow node from its peers.
2. measure: the same exchanges again, PASSES times in turn, each link's volume sized from
   its probe so that every link takes about TARGET_S (a slow link gets a small volume: the
   check stays short); a link's best pass counts.
3. all_reduce across every process, sized from the slowest link, for the bus bandwidth
   (nccl-tests' busbw: algorithm bandwidth times 2(n-1)/n).
NCCL carries it where torch sees GPUs (one process per GPU, each paired with the same local
rank on the peer node), gloo elsewhere. Under NCCL, each process also says which network NCCL
chose (its "Using network NAME" log line, read from a log file of the process's own): a GPU
network's plugin (GPUDirectTCPX, FasTrak, gIB, Libfabric) or plain Socket, with what NCCL's
network plugins logged of themselves (their "NET/..." lines, e.g. aws-ofi-nccl's "NET/OFI
Selected provider is efa, ..."), which dlvm's provider of the machines reads.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

MARKER = "@dlvm-check "
LOOKUP_WAIT_S = 8.0  # how long the probe waits for all name lookups together
TARGET_S = 0.2  # how long one link's measured transfer should take
PASSES = 3  # measurements of each link; the best counts
# backend -> (probe bytes, largest bytes per link or all_reduce)
VOLUMES = {"gloo": (1 << 20, 64 << 20), "nccl": (16 << 20, 1 << 30)}
# NCCL's INFO line naming the network transport a communicator uses ("Using network Socket",
# "Using network GPUDirectTCPX", "Using network AWS Libfabric").
NCCL_NETWORK = re.compile(r"NCCL INFO Using network ([A-Za-z0-9][A-Za-z0-9 ._/-]{0,47})\s*$")
# A line NCCL or one of its network plugins logged of the network ("NET/OFI ...", "NET/IB ...").
NCCL_NET_LINE = re.compile(r"NCCL INFO (NET/[A-Za-z0-9][ -~]{0,199})")
MAX_NET_LINES = 24  # of them sent, each distinct one once, the first ones


def emit(kind: str, **data: Any) -> None:
    print(MARKER + json.dumps({"kind": kind, **data}), flush=True)


def python_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import torch
    except Exception as error:  # any failure to import is the finding
        facts["error"] = f"{type(error).__name__}: {error}"
        return facts
    facts["torch"] = str(torch.__version__)
    facts["cuda"] = torch.version.cuda
    facts["cuda_available"] = bool(torch.cuda.is_available())
    facts["gpus"] = torch.cuda.device_count() if facts["cuda_available"] else 0
    return facts


def name_facts(addresses: list[str]) -> dict[str, Any]:
    """This node's hostname and what it resolves to; a reverse lookup of every node's address
    as torch's TCPStore makes one (IPv4, and ::ffff:IPv4 as a listener on [::] sees it), all
    at once, waiting LOOKUP_WAIT_S at most: a resolver that does not answer is the finding."""
    hostname = socket.gethostname()
    facts: dict[str, Any] = {"hostname": hostname}
    try:
        facts["hostname_address"] = socket.gethostbyname(hostname)
    except OSError as error:
        facts["hostname_error"] = str(error)
    forms = []
    for address in addresses[:256]:
        forms.append(address)
        if "." in address and ":" not in address:
            forms.append("::ffff:" + address)
    results: dict[str, dict[str, Any]] = {}

    def lookup(form: str) -> None:
        start = time.monotonic()
        where = (form, 0, 0, 0) if ":" in form else (form, 0)
        try:
            name = socket.getnameinfo(where, 0)[0]
            found: dict[str, Any] = {"name": name}
        except OSError as error:
            found = {"error": str(error)}
        found["seconds"] = round(time.monotonic() - start, 3)
        results[form] = found

    threads = [threading.Thread(target=lookup, args=(form,), daemon=True) for form in forms]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + LOOKUP_WAIT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    facts["lookups"] = [
        {"address": form, **results.get(form, {"error": f"no answer in {LOOKUP_WAIT_S:g}s"})}
        for form in forms
    ]
    return facts


def nccl_network(lines: Iterable[str]) -> str:
    """The network NCCL chose, from its log lines (the last one said); "" when none says."""
    found = ""
    for line in lines:
        match = NCCL_NETWORK.search(line)
        if match:
            found = match.group(1).strip()
    return found


def nccl_net_lines(lines: Iterable[str]) -> list[str]:
    """The distinct NET/ lines of NCCL's log, in order, the first MAX_NET_LINES."""
    found: list[str] = []
    for line in lines:
        match = NCCL_NET_LINE.search(line)
        if match and match.group(1).rstrip() not in found:
            found.append(match.group(1).rstrip())
            if len(found) == MAX_NET_LINES:
                break
    return found


def log_nccl_init() -> Path:
    """Have NCCL log its initialisation to a folder of this process's own (not stdout, which
    is dlvm's), before any communicator exists."""
    folder = Path(tempfile.mkdtemp(prefix="dlvm-check-nccl-"))
    os.environ["NCCL_DEBUG"] = "INFO"
    os.environ["NCCL_DEBUG_SUBSYS"] = "INIT,NET"
    os.environ["NCCL_DEBUG_FILE"] = str(folder / "nccl.%p")
    return folder


def logged_network(folder: Path) -> tuple[str, list[str]]:
    """The network NCCL chose and its NET/ lines, from the folder's logs (then removed)."""
    lines: list[str] = []
    for path in sorted(folder.glob("nccl.*")):
        lines.extend(path.read_text(errors="replace").splitlines())
        path.unlink()
    folder.rmdir()
    return nccl_network(lines), nccl_net_lines(lines)


def probe() -> None:
    emit("python", **python_facts())
    addresses = os.environ.get("DLVM_NODE_IPS", "").split()
    emit("names", **name_facts(addresses))


def bandwidth(timeout_s: float) -> None:
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    node, nodes = int(os.environ.get("GROUP_RANK", "0")), world // local_world
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    nccl_log = log_nccl_init() if cuda else None
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    probe_bytes, most_bytes = VOLUMES[backend]
    send = torch.ones(most_bytes // 4, dtype=torch.float32, device=device)
    receive = torch.empty_like(send)
    shifts = [1] if nodes == 2 else [1, nodes - 1] if nodes > 2 else []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peer(shift: int) -> int:
        return ((node + shift) % nodes) * local_world + local_rank

    def exchange(shift: int, send_bytes: int, receive_bytes: int) -> float:
        """Send to the node `shift` on, receive from the one `shift` back: seconds until
        everything was received."""
        outgoing, incoming = send[: send_bytes // 4], receive[: receive_bytes // 4]
        dist.barrier()
        start = time.perf_counter()
        if cuda:  # NCCL: both in one group, so that no pair waits on the other's order
            works = dist.batch_isend_irecv(
                [
                    dist.P2POp(dist.isend, outgoing, peer(shift)),
                    dist.P2POp(dist.irecv, incoming, peer(-shift)),
                ]
            )
        else:
            works = [
                work
                for work in (dist.isend(outgoing, peer(shift)), dist.irecv(incoming, peer(-shift)))
                if work is not None  # None only for a rank outside the group: never here
            ]
        works[-1].wait()
        sync()
        seconds = time.perf_counter() - start
        for work in works[:-1]:  # a gloo work waited on twice waits for a second message
            work.wait()
        sync()
        return seconds

    emit("ready", backend=backend, world=world, nodes=nodes, node=node, local_rank=local_rank)
    rates = torch.zeros(max(1, len(shifts)), world, dtype=torch.float64, device=device)
    for index, shift in enumerate(shifts):
        exchange(shift, 4096, 4096)  # connects the pair (NCCL connects on first use)
        rates[index, rank] = probe_bytes / exchange(shift, probe_bytes, probe_bytes)
    dist.all_reduce(rates)
    if nccl_log is not None:  # every communicator of this process exists by now
        network, net_lines = logged_network(nccl_log)
        emit("transport", network=network, net=net_lines)

    def volume(rate: float) -> int:
        return max(probe_bytes, min(most_bytes, int(rate * TARGET_S))) // 4 * 4

    best = [float("inf")] * len(shifts)
    for _ in range(PASSES):  # the shifts in turn, so that a pause of one node hits one pass
        for index, shift in enumerate(shifts):
            receive_bytes = volume(float(rates[index, rank]))
            send_bytes = volume(float(rates[index, peer(shift)]))
            best[index] = min(best[index], exchange(shift, send_bytes, receive_bytes))
    for index, shift in enumerate(shifts):
        emit("link", shift=shift, bytes=volume(float(rates[index, rank])), seconds=best[index])

    slowest = float(rates[:, :].min()) if shifts else 0.0
    size = volume(slowest * nodes / max(1, 2 * (nodes - 1))) if shifts else probe_bytes
    tensor = send[: size // 4]
    dist.all_reduce(tensor)  # warm up
    sync()
    dist.barrier()
    iterations = 3
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(tensor)
    sync()
    seconds = (time.perf_counter() - start) / iterations
    emit("allreduce", backend=backend, bytes=size, seconds=seconds, world=world)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "probe":
        probe()
    elif mode == "bandwidth":
        bandwidth(float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
    else:
        sys.exit("usage: netcheck.py probe | bandwidth [TIMEOUT_S]")


if __name__ == "__main__":
    main()
