"""What the machine itself says about a cluster: namespaces, links, processes, mounts.

Tests check these, not dlvm's own bookkeeping, to prove `down` leaves nothing behind.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from harness import wait_until


def namespaces(cluster: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if f"dlvm-{cluster}-" in line]


def links(prefixes: list[str]) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [name for name in names if any(name.startswith(p) for p in prefixes)]


RUN_TAG = f"{random.randrange(10**6):06d}"  # this run's: two runs never count each other's


def sleep_marker(seconds: int) -> str:
    """A `sleep` command found on the machine by its text alone (local nodes share the
    process list): unique to this run, so that another run of the same test on the machine
    is never counted."""
    return f"sleep {seconds}.{RUN_TAG}"


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if text in line and " Z" not in line]


def wait_for_processes(text: str, count: int, timeout: float = 30) -> list[str]:
    """The processes mentioning `text`, once there are at least `count` of them."""

    def enough() -> list[str]:
        found = processes_mentioning(text)
        return found if len(found) >= count else []

    return wait_until(
        enough,
        timeout,
        message=lambda: (
            f"fewer than {count} processes mention {text!r}: {processes_mentioning(text)}"
        ),
    )


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    return fields[0] != "Z"


def wait_gone(pid: int, timeout: float = 10) -> bool:
    """True once `pid` is gone (or a zombie); fails the test if it lives `timeout` seconds."""
    return wait_until(
        lambda: not alive(pid), timeout, interval=0.05, message=f"process {pid} still runs"
    )


def mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def namespace_processes(cluster: str) -> dict[int, str]:
    """PID -> command line of every process in the cluster's network namespaces: its nodes'
    init and sshd, and whatever runs on them (precise even with other clusters running)."""
    found: dict[int, str] = {}
    for namespace in namespaces(cluster):
        out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        for pid in out.stdout.split():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            found[int(pid)] = args.replace(b"\0", b" ").decode(errors="replace").strip()
    return found
