"""Ready before launch: wait for every node's boot-time setup (the GPU network of A3/A4 VMs),
and keep the cluster on one transport.

A provider whose machines set something up at boot says so (Provider.boot_readiness). `up`,
`scale`, `start` and a recovery then ask every node, over SSH, for its verdict until each has
one, showing how many are ready and, now and then, what the others are doing. A node whose
setup failed would run its ranks on plain NCCL while the others use the plugin, and NCCL
requires every rank to agree: the job would hang at its first collective. So when any node
failed, every node is switched to the fallback (plain NCCL), and `up` says so loudly, naming
the node and the step that failed; the job runs, slower. The cluster's next `up`, `start` or
recovery asks again, so a node that succeeds on a later boot brings the plugin back to all.

What a node answers is the node's to choose: only the first line, cut short, of the forms
known is read.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import BootReadiness
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.pool import SshPool, for_each_node, run_everywhere

POLL_S = 10.0  # between two rounds of asking
NOTE_EVERY_S = 60.0  # how often the nodes still at work are named
MAX_TEXT = 160  # characters of a node's answer kept
MAX_NAMED = 8
STEP = "GPU network"


@dataclass(frozen=True)
class Verdict:
    """One node's answer: ready, failed, running (with the step under way) or waiting."""

    state: str
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.state in ("ready", "failed")


def parse_verdict(output: str) -> Verdict:
    """The first line of a node's answer; anything else than the known forms is `waiting`
    (an unreachable node, or one whose answer cannot be read, has no verdict yet)."""
    line = output.split("\n", 1)[0].strip()
    state, _, detail = line.partition(" ")
    if state not in ("ready", "failed", "running", "waiting"):
        return Verdict("waiting")
    printable = "".join(ch if ch.isprintable() else "?" for ch in detail.strip())
    return Verdict(state, printable[:MAX_TEXT])


@dataclass(frozen=True)
class BootOutcome:
    """What the cluster's jobs will use: the setup's title, or its fallback (with why)."""

    transport: str
    fell_back: tuple[str, ...] = ()  # "node (step)" of each node that failed


Probe = Callable[[Sequence[Node]], Mapping[str, str]]


def await_verdicts(
    nodes: Sequence[Node],
    readiness: BootReadiness,
    probe: Probe,
    progress: Progress,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Verdict]:
    """Ask every node until each has a verdict; RemoteError past readiness.timeout_s, naming
    the nodes still at work and their steps."""
    begun = clock()
    next_note = begun + NOTE_EVERY_S
    verdicts: dict[str, Verdict] = {}
    while True:
        answers = probe([node for node in nodes if not verdicts.get(node.name, Verdict("")).done])
        for name, text in answers.items():
            verdicts[name] = parse_verdict(text)
        done = [node for node in nodes if verdicts.get(node.name, Verdict("")).done]
        progress.count(f"{STEP}: {readiness.title}", len(done), len(nodes), "nodes set up")
        pending = [node for node in nodes if node not in done]
        if not pending:
            return verdicts
        now = clock()
        if now - begun >= readiness.timeout_s:
            raise RemoteError(
                f"the {readiness.title} setup has not finished after "
                f"{readiness.timeout_s / 60:.0f} minutes on {_at_work(pending, verdicts)}",
                hint="look at its log on the node (journalctl -u google-startup-scripts), "
                "then run the command again; jobs wait until every node has set up",
            )
        if now >= next_note:
            next_note = now + NOTE_EVERY_S
            progress.note(
                f"{STEP} still being set up after {(now - begun) / 60:.0f}m: "
                + _at_work(pending, verdicts)
            )
        sleep(POLL_S)


def _at_work(pending: Sequence[Node], verdicts: Mapping[str, Verdict]) -> str:
    shown = []
    for node in pending[:MAX_NAMED]:
        verdict = verdicts.get(node.name, Verdict("waiting"))
        what = verdict.detail if verdict.state == "running" and verdict.detail else "not begun"
        shown.append(f"{node.name} ({what})")
    if len(pending) > MAX_NAMED:
        shown.append(f"and {len(pending) - MAX_NAMED} more")
    return ", ".join(shown)


def settle(
    nodes: Sequence[Node],
    readiness: BootReadiness,
    verdicts: Mapping[str, Verdict],
    fallback: Callable[[str], None],
    progress: Progress,
) -> BootOutcome:
    """Every node ready: the setup's transport. Any failed: `fallback(reason)` on all, said
    loudly, so that no job mixes transports."""
    failed = [
        f"{node.name} ({verdicts[node.name].detail or 'unknown step'})"
        for node in nodes
        if verdicts[node.name].state == "failed"
    ]
    if not failed:
        return BootOutcome(readiness.title)
    reason = f"{readiness.title} setup failed on {', '.join(failed)}"
    progress.note(
        f"WARNING: {reason}: every node uses {readiness.fallback_title} instead, so that no "
        "job mixes transports (NCCL needs every rank on the same one); jobs run, slower. "
        "The next `dlvm up` or `dlvm start` tries again"
    )
    fallback(reason)
    return BootOutcome(readiness.fallback_title, tuple(failed))


def wait_for_boot(
    pool: SshPool,
    nodes: Sequence[Node],
    readiness: BootReadiness | None,
    progress: Progress,
) -> BootOutcome | None:
    """Wait for `nodes` (the whole cluster: one failed node changes every node's transport)
    to finish their boot-time setup, and settle the cluster on one transport."""
    if readiness is None or not nodes:
        return None
    progress.stage(f"waiting for the {readiness.title} setup of every node")
    script = readiness.script.encode()

    def ask(connection: Connection) -> str:
        code, out, _ = connection.run(readiness.probe, stdin=script)
        return out if code == 0 else ""

    def probe(asked: Sequence[Node]) -> dict[str, str]:
        answers = for_each_node(pool, asked, ask, lambda node, error: "")
        return {node.name: answer for node, answer in zip(asked, answers, strict=True)}

    def fallback(reason: str) -> None:
        command = f"{readiness.fallback} {shlex.quote(reason)}"
        run_everywhere(pool, nodes, command, script, f"cannot switch to {readiness.fallback_title}")

    verdicts = await_verdicts(nodes, readiness, probe, progress)
    return settle(nodes, readiness, verdicts, fallback, progress)
