"""Shared parts of the benchmarks: a private DLVM_HOME, local clusters that are brought down on
any exit (error, Ctrl-C, SIGTERM), whole-process timing and the result table.

Not a benchmark itself; the scripts beside it import it.
"""

from __future__ import annotations

import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def dlvm_argv() -> list[str]:
    """The `dlvm` console script of this interpreter's environment (what users run)."""
    script = Path(sys.executable).with_name("dlvm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dlvm_cluster"]


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds, whole process
    cpu: float  # user + system seconds of the process and the children it waited for


def run_timed(
    argv: Sequence[str], env: dict[str, str], *, cwd: Path | None = None
) -> tuple[Timing, subprocess.CompletedProcess[str]]:
    """Run argv to completion, capturing output; wall time and the client's CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu), done


def check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} exited {done.returncode}\nstdout:\n{done.stdout[-2000:]}\n"
            f"stderr:\n{done.stderr[-2000:]}"
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min-max as a short text, to show how noisy a median is."""
    return f"{min(values):.2f}-{max(values):.2f}"


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.node()}: {os.cpu_count()} cores, load average {load}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM ends a benchmark like Ctrl-C does, so clusters are brought down either way."""
    signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so a second one cannot leave a cluster."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


class Bench:
    """A private DLVM_HOME (a temp dir, removed at the end) and the environment to run in."""

    def __init__(self, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dlvm-bench-"))
        self.home = self.root / "home"
        self.home.mkdir(mode=0o700)
        self.keep = keep

    def env(self, **extra: str) -> dict[str, str]:
        """Cold by default: DLVM_NO_AGENT=1 keeps `dlvm exec` and `dlvm sync` from using or
        starting the per-cluster agent that holds connections open between commands."""
        base = {"DLVM_HOME": str(self.home), "NO_COLOR": "1", "DLVM_NO_AGENT": "1"}
        return {**os.environ, **base, **extra}

    def dlvm(
        self, *args: str, agent: bool = False
    ) -> tuple[Timing, subprocess.CompletedProcess[str]]:
        """Run `dlvm ARGS`; with `agent`, `dlvm exec` and `dlvm sync` may use (or start) the
        cluster's agent."""
        env = self.env(DLVM_NO_AGENT="0") if agent else self.env()
        return run_timed([*dlvm_argv(), *args], env, cwd=self.root)

    def state_dir(self, cluster: str) -> Path:
        return self.home / "clusters" / cluster

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Cluster:
    name: str
    count: int
    spec: Path
    ssh_config: Path  # as `dlvm ssh-config` prints it
    hosts: tuple[str, ...]  # the Host names in ssh_config, rank order


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@contextmanager
def local_cluster(
    bench: Bench,
    prefix: str,
    count: int,
    files: Sequence[tuple[str, str]] = (),
    extra: Sequence[str] = (),
) -> Iterator[Cluster]:
    """Bring up a local cluster of `count` nodes; always bring it down again. `extra`: more
    lines of its cluster file (env, job)."""
    name = unique_name(prefix)
    spec = bench.root / f"{name}.yaml"
    lines = [f"name: {name}", "provider: {kind: local}", f"nodes: {{count: {count}}}"]
    if files:
        lines.append("files:")
        lines.extend(f"  - {{src: {src}, dst: {dst}}}" for src, dst in files)
    lines.extend(extra)
    spec.write_text("\n".join(lines) + "\n")
    print(f"# up {name} ({count} nodes) ...", flush=True)
    try:
        timing, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
        check(done, f"dlvm up {name}")
        print(f"# {name} is up ({timing.wall:.1f}s)", flush=True)
        _, done = bench.dlvm("ssh-config", name)
        check(done, "dlvm ssh-config")
        config = bench.root / f"{name}.ssh_config"
        config.write_text(done.stdout)
        hosts = tuple(
            line.split()[1] for line in done.stdout.splitlines() if line.startswith("Host ")
        )
        if len(hosts) != count:
            raise RuntimeError(f"ssh-config names {len(hosts)} hosts, expected {count}")
        yield Cluster(name, count, spec, config, hosts)
    finally:
        print(f"# down {name} ...", flush=True)
        down_cluster(bench, name)


def down_cluster(bench: Bench, name: str) -> None:
    """`dlvm down NAME`, which neither a Ctrl-C nor a SIGTERM interrupts; when it fails, says
    how to finish by hand and keeps the bench's DLVM_HOME for that."""
    with uninterrupted():
        done = subprocess.run(
            [*dlvm_argv(), "down", name, "--yes"],
            env=bench.env(),
            cwd=bench.root,
            capture_output=True,
            text=True,
            start_new_session=True,  # a Ctrl-C at the terminal does not reach it
        )
    if done.returncode != 0:
        print(
            f"!! dlvm down {name} failed ({done.returncode}): {done.stderr.strip()}\n"
            f"!! bring it down by hand: DLVM_HOME={bench.home} dlvm down {name} --yes",
            file=sys.stderr,
        )
        bench.keep = True


def pq_config(cluster: Cluster) -> str:
    """The cluster's ssh config without its KexAlgorithms pin: OpenSSH's default post-quantum
    exchange, as plain `pdsh -R ssh` and `rsync -a` use it (and the baselines did)."""
    text = cluster.ssh_config.read_text()
    path = cluster.ssh_config.with_suffix(".pq")
    path.write_text("".join(line for line in text.splitlines(True) if "KexAlgorithms" not in line))
    return str(path)


AGENT_START = 30.0  # seconds an agent may take to answer after the command that started it


def agent_ping(bench: Bench, cluster: Cluster) -> dict[str, Any] | None:
    """What the cluster's agent says about itself; None where none answers (or none exists)."""
    try:
        from dlvm_cluster.remote import agent_client
    except ImportError:
        return None
    return agent_client.ping(bench.state_dir(cluster.name))


def agent_served(bench: Bench, cluster: Cluster) -> int:
    """How many requests the cluster's agent has served (-1: no agent answers)."""
    info = agent_ping(bench, cluster) or {}
    return int(info.get("served", -1))


def wait_for_agent(bench: Bench, cluster: Cluster) -> bool:
    """Start the cluster's agent (a `dlvm exec` allowed to use it runs cold and starts it) and
    wait until it answers. False where there is no agent."""
    if agent_ping(bench, cluster) is None:
        check(bench.dlvm("exec", cluster.name, "--", "true", agent=True)[1], "dlvm exec")
        deadline = time.monotonic() + AGENT_START
        while agent_ping(bench, cluster) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as plain text too), numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths))
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])
