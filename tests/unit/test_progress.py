"""Progress per node: the Progress.count display (terminal and not) and the SSH readiness
and setup watchers that feed it. A real `dlvm up` whose log shows the counted steps:
tests/cluster/test_progress_e2e.py."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from rich.console import Console

from dlvm_cluster.cli.display import ConsoleProgress, format_count
from dlvm_cluster.inventory import Node
from dlvm_cluster.orchestrate.cluster.files import PER_NODE_LINES, _ByteTally, _SetupWatch
from dlvm_cluster.orchestrate.cluster.prepare import MAX_NAMED, SLOW_READY, ReadyWatch
from dlvm_cluster.progress import TerraformEvent
from dlvm_cluster.remote.results import CommandResult

# --- helpers


def console(*, terminal: bool, colour: bool = False) -> tuple[Console, StringIO]:
    out = StringIO()
    made = Console(
        file=out,
        force_terminal=terminal,
        force_interactive=terminal,
        color_system="standard" if colour else None,
        width=200,
        highlight=False,
        soft_wrap=True,
    )
    return made, out


def node(rank: int) -> Node:
    return Node(f"node-{rank}", rank, f"10.0.0.{rank + 2}", 22, "root", "ssh-ed25519 AAAA")


class Recorder:
    """A Progress that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def stage(self, text: str) -> None:
        self.events.append(("stage", text))

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def terraform(self, event: TerraformEvent) -> None:
        return None

    def line(self, node: Node, stream: str, text: str) -> None:
        self.events.append(("line", node.name, text))

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        self.events.append(("count", step, f"{done}/{total}", unit))

    def notes(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "note"]

    def counts(self) -> list[str]:
        return [event[2] for event in self.events if event[0] == "count"]


# --- format_count


@pytest.mark.parametrize(
    ("done", "total", "unit", "shown"),
    [
        (5, 8, "nodes", "5/8 nodes"),
        (3, 4, "", "3/4"),
        (12_500_000, 100_000_000, "B", "12.5/100.0 MB"),
        (1_500, 78_400, "B", "1.5/78.4 KB"),
        (2_000_000_000, 3_000_000_000, "B", "2.0/3.0 GB"),
        (10, 999, "B", "10/999 B"),
    ],
)
def test_format_count(done: int, total: int, unit: str, shown: str) -> None:
    assert format_count(done, total, unit) == shown


# --- ConsoleProgress without a terminal: one line per completed step, nothing else


def test_plain_prints_only_the_completed_count() -> None:
    made, out = console(terminal=False)
    progress = ConsoleProgress(console=made)
    progress.stage("waiting for SSH")
    for done in range(9):
        progress.count("waiting for SSH", done, 8, "nodes")
    progress.count("waiting for SSH", 8, 8, "nodes")  # reported twice: still one line
    lines = out.getvalue().splitlines()
    assert lines[0] == "==> waiting for SSH"
    assert len(lines) == 2, lines
    assert lines[1].startswith("  ✓ waiting for SSH: 8/8 nodes (")
    assert lines[1].endswith("s)")


def test_plain_bytes_line_and_a_step_run_again() -> None:
    made, out = console(terminal=False)
    progress = ConsoleProgress(console=made)
    for _ in range(2):
        progress.stage("sync")
        progress.count("sync", 0, 100_000_000, "B")
        progress.count("sync", 12_500_000, 100_000_000, "B")
        progress.count("sync", 100_000_000, 100_000_000, "B")
    progress.count("sync", 12_500_000, 100_000_000, "B")  # late, out of order: ignored
    progress.count("sync", 100_000_000, 100_000_000, "B")
    lines = [line for line in out.getvalue().splitlines() if not line.startswith("==>")]
    assert [line.split(" (")[0] for line in lines] == ["  ✓ sync: 100.0/100.0 MB"] * 2


def test_quiet_prints_nothing() -> None:
    made, out = console(terminal=False)
    progress = ConsoleProgress(quiet=True, console=made)
    progress.stage("setup")
    progress.count("setup", 2, 2, "nodes")
    progress.note("  ✓ node-0 setup (0.1s)")
    assert out.getvalue() == ""


def test_completion_is_printed_once_across_threads() -> None:
    made, out = console(terminal=False)
    progress = ConsoleProgress(console=made)
    barrier = threading.Barrier(16)

    def report(done: int) -> None:
        barrier.wait()
        progress.count("setup", done, 16, "nodes")
        progress.count("setup", 16, 16, "nodes")

    threads = [threading.Thread(target=report, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out.getvalue().count("✓ setup: 16/16 nodes") == 1, out.getvalue()


def test_step_named_like_its_stage_is_timed_from_the_stage() -> None:
    made, out = console(terminal=False)
    progress = ConsoleProgress(console=made)
    progress.stage("setup")
    progress._stage_started -= 7.0  # the stage began 7s ago; its first count comes now
    progress.count("setup", 1, 1, "nodes")
    assert "✓ setup: 1/1 nodes (7.0s)" in out.getvalue()


# --- ConsoleProgress on a terminal: the spinner shows the live count


@pytest.fixture
def xterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")  # a "dumb" terminal gets no live display


@pytest.mark.usefixtures("xterm")
def test_terminal_spinner_shows_the_count() -> None:
    made, out = console(terminal=True)
    progress = ConsoleProgress(console=made)
    progress.stage("waiting for SSH")
    progress.count("waiting for SSH", 5, 8, "nodes")
    progress.done()  # stopping the live display renders its last frame
    text = out.getvalue()
    assert "waiting for SSH: 5/8 nodes" in text
    assert "✓" not in text  # not complete: no line


@pytest.mark.usefixtures("xterm")
def test_terminal_spinner_shows_bytes_then_the_completed_line() -> None:
    made, out = console(terminal=True)
    progress = ConsoleProgress(console=made)
    progress.stage("sync")
    progress.count("sync", 12_500_000, 100_000_000, "B")
    progress.done()
    assert "sync: 12.5/100.0 MB" in out.getvalue()
    progress.count("sync", 100_000_000, 100_000_000, "B")
    progress.done()
    assert "✓ sync: 100.0/100.0 MB (" in out.getvalue()


def test_notes_with_a_mark_get_its_colour() -> None:
    made, out = console(terminal=True, colour=True)
    progress = ConsoleProgress(console=made)
    progress.note("  ✓ node-0 setup (0.2s)")
    progress.note("  ✗ node-1 setup failed: exit 3 (0.1s)")
    progress.note("plain [not markup")
    text = out.getvalue()
    assert "\x1b[32m✓\x1b[0m node-0 setup (0.2s)" in text
    assert "\x1b[31m✗\x1b[0m node-1 setup failed" in text
    assert "plain [not markup" in text


# --- SSH readiness: a live count, and the names of the nodes still waiting when slow


def test_ready_watch_counts_and_names_the_slow_nodes() -> None:
    now = [100.0]
    recorder = Recorder()
    watch = ReadyWatch(recorder, 12, clock=lambda: now[0])
    watch.ready(node(0))
    watch.ready(node(1))
    assert recorder.counts() == ["0/12", "1/12", "2/12"]
    pending = [node(rank) for rank in range(2, 12)]
    now[0] += SLOW_READY - 1
    watch.waiting(pending)
    assert recorder.notes() == []  # not slow yet: no names
    now[0] += 1
    watch.waiting(pending)
    expected = ", ".join(f"node-{rank}" for rank in range(2, 2 + MAX_NAMED))
    assert recorder.notes() == [
        f"still waiting for SSH after {SLOW_READY:.0f}s: {expected}, and {10 - MAX_NAMED} more"
    ]
    now[0] += 1
    watch.waiting(pending[:1])
    assert len(recorder.notes()) == 1  # not again right away
    now[0] += SLOW_READY
    watch.waiting(pending[:1])
    assert recorder.notes()[-1] == f"still waiting for SSH after {2 * SLOW_READY + 1:.0f}s: node-2"


# --- setup: counts of nodes that succeeded, a line per node on small clusters


def _ended(node: str, code: int | None, seconds: float, error: str = "") -> CommandResult:
    rank = int(node.split("-")[1])
    return CommandResult(node=node, rank=rank, exit_code=code, error=error, duration=seconds)


def test_setup_watch_small_cluster_has_a_line_per_node() -> None:
    recorder = Recorder()
    watch = _SetupWatch(recorder, 3)
    watch.finished(_ended("node-1", 0, 1.25))
    watch.finished(_ended("node-0", 0, 0.1), skipped=True)  # unchanged: counted, no line
    watch.finished(_ended("node-2", 3, 0.5))
    watch.finished(_ended("node-2", None, 9.0, "connection lost"))  # second report: ignored
    assert recorder.notes() == ["  ✓ node-1 setup (1.2s)", "  ✗ node-2 setup failed: exit 3 (0.5s)"]
    assert recorder.counts() == ["0/3", "1/3", "2/3"]  # the failed node never completes it


def test_setup_watch_big_cluster_only_counts_and_names_failures() -> None:
    recorder = Recorder()
    total = PER_NODE_LINES + 1
    watch = _SetupWatch(recorder, total)
    for rank in range(total - 1):
        watch.finished(_ended(f"node-{rank}", 0, 1.0))
    watch.finished(_ended(f"node-{total - 1}", None, 1.0, "unreachable: refused"))
    assert recorder.notes() == [f"  ✗ node-{total - 1} setup failed: unreachable: refused (1.0s)"]
    assert recorder.counts()[-1] == f"{total - 1}/{total}"


# --- sync: bytes sent of bytes planned, over every node


def test_byte_tally_reports_once_every_node_has_planned() -> None:
    recorder = Recorder()
    tally = _ByteTally(recorder, "sync a -> b", 3)
    tally.planned(100)
    tally.sent(60)  # a node may send before the others have listed: no total yet
    tally.planned(0)
    assert recorder.counts() == []
    tally.planned(50)
    tally.sent(200)  # tar headers and padding: more bytes than the files hold
    tally.sent(512)
    assert recorder.counts() == ["60/150", "150/150"]  # capped, and complete only once


def test_byte_tally_of_nothing_to_send_reports_nothing() -> None:
    recorder = Recorder()
    tally = _ByteTally(recorder, "sync a -> b", 2)
    tally.planned(0)
    tally.planned(0)
    tally.sent(1024)  # the empty tar's end blocks
    assert recorder.counts() == []
