"""Ready before launch: the wait for every node's boot-time setup (orchestrate/cluster/
boot.py), with the nodes' answers scripted and a clock that only moves when the wait sleeps.
The answers' forms are the A3/A4 boot script's own (test_gcp_gpu_setup_script.py runs its
probe)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.orchestrate.cluster.boot import (
    POLL_S,
    Verdict,
    await_verdicts,
    parse_verdict,
    settle,
)
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.gcp.gpu_network import FALLBACK_TITLE, boot_readiness

READINESS = boot_readiness("a3-megagpu-8g")
assert READINESS is not None
NODES = [Node(f"node-{rank}", rank, f"10.0.0.{rank + 2}", 22, "dlvm", "") for rank in range(3)]


class Recorder(SilentProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.counts: list[tuple[int, int]] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        self.counts.append((done, total))


class Script:
    """Each round's answers, node by node; the clock moves only when the wait sleeps."""

    def __init__(self, rounds: list[dict[str, str]]) -> None:
        self.rounds = rounds
        self.asked: list[list[str]] = []
        self.now = 0.0

    def probe(self, nodes: Sequence[Node]) -> Mapping[str, str]:
        self.asked.append([node.name for node in nodes])
        answers = self.rounds[min(len(self.asked), len(self.rounds)) - 1]
        return {node.name: answers.get(node.name, "") for node in nodes}

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait(script: Script, progress: Recorder) -> dict[str, Verdict]:
    assert READINESS is not None
    return await_verdicts(
        NODES, READINESS, script.probe, progress, clock=lambda: script.now, sleep=script.sleep
    )


def test_the_wait_ends_when_every_node_has_a_verdict_and_asks_only_those_at_work() -> None:
    script = Script(
        [
            {"node-0": "ready tcpxo image", "node-1": "running wait for the NVIDIA driver"},
            {"node-1": "running install the GPUDirect-TCPXO NCCL plugin", "node-2": "waiting"},
            {"node-1": "ready tcpxo image", "node-2": "ready tcpxo image\n"},
        ]
    )
    progress = Recorder()
    verdicts = wait(script, progress)
    assert {name: v.state for name, v in verdicts.items()} == dict.fromkeys(
        ("node-0", "node-1", "node-2"), "ready"
    )
    assert script.asked == [
        ["node-0", "node-1", "node-2"],
        ["node-1", "node-2"],
        ["node-1", "node-2"],
    ]
    assert progress.counts == [(1, 3), (1, 3), (3, 3)]


def test_nodes_still_at_work_are_named_with_their_step_now_and_then() -> None:
    script = Script(
        [{"node-0": "ready x", "node-1": "running load the dmabuf import helper"}] * 8
        + [dict.fromkeys(("node-0", "node-1", "node-2"), "ready x")]
    )
    progress = Recorder()
    wait(script, progress)
    assert progress.notes == [
        "GPU network still being set up after 1m: node-1 (load the dmabuf import helper), "
        "node-2 (not begun)"
    ]


def test_a_setup_that_never_finishes_stops_the_wait_naming_node_and_step() -> None:
    script = Script([{"node-0": "ready x", "node-1": "ready x", "node-2": "running wait for rxdm"}])
    with pytest.raises(RemoteError) as caught:
        wait(script, Recorder())
    assert caught.value.message == (
        "the GPUDirect-TCPXO setup has not finished after 60 minutes on node-2 (wait for rxdm)"
    )
    assert "journalctl -u google-startup-scripts" in caught.value.hint
    assert script.now == pytest.approx(READINESS.timeout_s, abs=POLL_S)


def test_one_failed_node_puts_every_node_on_the_fallback_loudly() -> None:
    verdicts = {
        "node-0": Verdict("ready", "tcpxo image"),
        "node-1": Verdict("failed", "load the dmabuf import helper"),
        "node-2": Verdict("ready", "tcpxo image"),
    }
    progress = Recorder()
    reasons: list[str] = []
    outcome = settle(NODES, READINESS, verdicts, reasons.append, progress)
    assert reasons == ["GPUDirect-TCPXO setup failed on node-1 (load the dmabuf import helper)"]
    assert outcome.transport == FALLBACK_TITLE
    assert outcome.fell_back == ("node-1 (load the dmabuf import helper)",)
    [note] = progress.notes
    assert note.startswith(f"WARNING: {reasons[0]}: every node uses {FALLBACK_TITLE} instead")


def test_a_cluster_that_set_up_everywhere_keeps_its_transport() -> None:
    verdicts = {node.name: Verdict("ready", "tcpxo image") for node in NODES}
    reasons: list[str] = []
    outcome = settle(NODES, READINESS, verdicts, reasons.append, Recorder())
    assert (outcome.transport, reasons) == ("GPUDirect-TCPXO", [])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("ready tcpx image:v3\nextra", Verdict("ready", "tcpx image:v3")),
        (
            "failed check for a GPUDirect-TCPX kernel",
            Verdict("failed", "check for a GPUDirect-TCPX kernel"),
        ),
        ("", Verdict("waiting")),
        ("ready", Verdict("ready", "")),
        # A node's answer is its own to choose: unknown forms are no verdict, text is bounded
        # and made printable.
        ("READY x", Verdict("waiting")),
        ("rm -rf /", Verdict("waiting")),
        ("failed \x1b[2J" + "x" * 500, Verdict("failed", "?[2J" + "x" * 156)),
    ],
)
def test_answers_are_read_only_in_their_known_forms(answer: str, expected: Verdict) -> None:
    assert parse_verdict(answer) == expected
