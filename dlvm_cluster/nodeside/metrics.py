"""`dlvm top` and `dlvm dashboard` on a node: how busy it is, as one JSON line.

    python3 -c SOURCE INTERVAL     (sent whole with every refresh; nothing is left on the node)

Reads /proc (CPU, memory, load, network), statvfs (the home directory's file system) and,
where `nvidia-smi` exists, each GPU's utilization, memory, temperature and power. CPU and
network are rates over INTERVAL seconds, measured here, so that one refresh is one round.

A node that shares its kernel with other nodes (DLVM_SHARED_KERNEL=1, which the local
provider sets for its network-namespace nodes) counts CPU and memory of the processes in its
own network namespace, not the whole machine's: /proc/stat and /proc/meminfo would be the
same on every such node. Network counters are per namespace already.

Standard library only, nothing of dlvm: the node has its own python3, not dlvm. The one line
on stdout is MARKER then a JSON object; dlvm checks every field it reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

MARKER = "@dlvm-metrics "
GPU_FIELDS = "index,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
GPU_TIMEOUT_S = 5.0
MAX_GPUS = 64
MIB = 1 << 20


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError:
        return ""


def network_namespace(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def shares_kernel() -> bool:
    """Whether this node is one of several sharing a machine's kernel (the provider says so
    in DLVM_SHARED_KERNEL, as the local provider's network-namespace nodes do): then the
    machine-wide counters say nothing of this node. (PID 1's namespace, which would tell,
    is often unreadable, even to root.)"""
    return os.environ.get("DLVM_SHARED_KERNEL", "") == "1" and bool(network_namespace("self"))


def namespace_processes() -> list[str]:
    """The PIDs in this process's network namespace, this process left out."""
    own, me = network_namespace("self"), str(os.getpid())
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != me and network_namespace(entry) == own:
            pids.append(entry)
    return pids


def process_ticks(pids: list[str]) -> int:
    """utime + stime of these processes, in clock ticks."""
    total = 0
    for pid in pids:
        stat = read(f"/proc/{pid}/stat")
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 12:
            total += int(fields[11]) + int(fields[12])
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat's first line."""
    fields = read("/proc/stat").split("\n", 1)[0].split()[1:]
    values = [int(value) for value in fields[:8]]
    idle = sum(values[3:5])  # idle + iowait
    return sum(values) - idle, sum(values)


def network_bytes() -> tuple[int, int]:
    """(received, sent) bytes on every interface but loopback, from /proc/net/dev."""
    received = sent = 0
    for line in read("/proc/net/dev").splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = counters.split()
        if name.strip() == "lo" or len(values) < 9:
            continue
        received += int(values[0])
        sent += int(values[8])
    return received, sent


def memory(pids: list[str] | None) -> tuple[int, int]:
    """(used, total) bytes: total minus available, or the processes' resident memory."""
    info = {}
    for line in read("/proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal", 0)
    if pids is None:
        return total - info.get("MemAvailable", info.get("MemFree", 0)), total
    page = os.sysconf("SC_PAGE_SIZE")
    used = 0
    for pid in pids:
        fields = read(f"/proc/{pid}/statm").split()
        if len(fields) > 1:
            used += int(fields[1]) * page
    return used, total


def disk() -> dict[str, Any]:
    path = os.path.expanduser("~")
    try:
        stats = os.statvfs(path)
    except OSError:
        return {}
    total = stats.f_blocks * stats.f_frsize
    return {
        "path": path,
        "used_bytes": total - stats.f_bfree * stats.f_frsize,
        "total_bytes": total,
    }


def number(text: str) -> float | None:
    """An nvidia-smi value: None for `[N/A]`, `[Not Supported]` and the like."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_gpus(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=GPU_FIELDS --format=csv,noheader,nounits`, one row per GPU;
    memory in MiB, power in watts. A row that is not one GPU's is left out."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 6 or not cells[0].isdigit():
            continue
        util, used, total, temperature, power = (number(cell) for cell in cells[1:])
        gpus.append(
            {
                "index": int(cells[0]),
                "util_percent": util,
                "memory_used_bytes": None if used is None else int(used * MIB),
                "memory_total_bytes": None if total is None else int(total * MIB),
                "temperature_c": temperature,
                "power_w": power,
            }
        )
        if len(gpus) >= MAX_GPUS:
            break
    return gpus


def gpu_facts() -> dict[str, Any]:
    """The GPUs, or why they could not be read; nothing where there is no nvidia-smi."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return {}
    try:
        done = subprocess.run(
            [program, f"--query-gpu={GPU_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GPU_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"gpu_error": f"nvidia-smi: {error}"[:300]}
    if done.returncode != 0:
        why = (done.stdout + done.stderr).strip().splitlines()
        return {"gpu_error": f"nvidia-smi: {why[0] if why else done.returncode}"[:300]}
    return {"gpus": parse_gpus(done.stdout)}


def sample(interval: float) -> dict[str, Any]:
    own = shares_kernel()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    pids = namespace_processes() if own else None
    start = time.monotonic()
    busy0, total0 = (process_ticks(pids), 0) if pids is not None else machine_ticks()
    rx0, tx0 = network_bytes()
    time.sleep(interval)
    elapsed = time.monotonic() - start
    rx1, tx1 = network_bytes()
    if pids is not None:
        pids = namespace_processes()
        busy1 = process_ticks(pids)
        # Processes that ended during the interval take their ticks with them: never below 0.
        share = max(0, busy1 - busy0) / (elapsed * ticks_per_s * (cpus or 1))
    else:
        busy1, total1 = machine_ticks()
        share = (busy1 - busy0) / max(1, total1 - total0)
    used, total = memory(pids)
    load = os.getloadavg()
    return {
        "cpu_percent": round(min(100.0, 100.0 * share), 1),
        "cpus": cpus,
        "scope": "namespace" if own else "machine",
        "memory_used_bytes": used,
        "memory_total_bytes": total,
        "load": [round(value, 2) for value in load],
        "disk": disk(),
        "net_rx_bytes_per_s": round(max(0, rx1 - rx0) / elapsed, 1),
        "net_tx_bytes_per_s": round(max(0, tx1 - tx0) / elapsed, 1),
        **gpu_facts(),
    }


def main(argv: list[str]) -> int:
    try:
        interval = min(5.0, max(0.1, float(argv[0]))) if argv else 0.5
    except ValueError:
        interval = 0.5
    print(MARKER + json.dumps(sample(interval)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
