"""What the machine itself says about a cluster: namespaces, links, processes, mounts.

Tests check these, not dlvm's own bookkeeping, to prove `down` leaves nothing behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def namespaces(cluster: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if f"dlvm-{cluster}-" in line]


def links(prefixes: list[str]) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [name for name in names if any(name.startswith(p) for p in prefixes)]


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if text in line and " Z" not in line]


def mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]
