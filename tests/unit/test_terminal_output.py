"""Node output reaches a terminal with its control characters shown as escapes (an OSC 52
sequence would set the user's clipboard, a carriage return would let a line pose as another
node's); --json keeps the exact characters, JSON-escaped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from dlvm_cluster.cli import display, summaries
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.progress import NodeLines, show_controls, write_node_line
from dlvm_cluster.remote.results import CommandResult, GroupResult

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQe0b1bHqvFXaP0Yb3dXvN7jSRAi3lDRsQFZ3tjv7bC"
NODE = Node(name="node-1", rank=1, ip="10.0.0.2", port=22, user="u", host_key=KEY)
CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07"
POSING = "done\r[node-0] all good"
HOSTILE = f"{CLIPBOARD}{POSING}\tend\x9b2J\x7f\x00"


def test_show_controls_escapes_every_control_but_tab() -> None:
    shown = show_controls(HOSTILE)
    assert shown == (
        "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07done\\r[node-0] all good\tend\\x9b2J\\x7f\\x00"
    )
    assert show_controls("a\nb") == "a\\nb"
    assert show_controls("a\nb\r", keep_newlines=True) == "a\nb\\r"
    assert show_controls("plain ✓ text") == "plain ✓ text"


def printable_only(text: str) -> bool:
    return all(char.isprintable() or char in "\t\n" for char in text)


@pytest.mark.parametrize("stream", ["out", "err"])
def test_a_node_line_is_escaped(stream: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_node_line(NODE, stream, HOSTILE)
    NodeLines().line(NODE, stream, HOSTILE)
    captured = capsys.readouterr()
    written = captured.out if stream == "out" else captured.err
    assert written.count("\n") == 2 and printable_only(written)
    assert written.startswith("[node-1] \\x1b]52;")


def test_console_progress_lines_and_notes_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """The typer commands' progress: exec, setup, launch and `dlvm logs` lines, and notes
    that quote a node (why its setup failed)."""
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    progress = display.ConsoleProgress(console=console)
    progress.line(NODE, "out", HOSTILE)
    progress.note(f"  ✗ node-1 setup failed: {POSING}")
    for json_mode in (True, False):
        display.console_progress(json_output=json_mode).line(NODE, "out", HOSTILE)
    captured = capsys.readouterr()
    assert printable_only(captured.out) and printable_only(captured.err)
    assert printable_only(console.file.getvalue())  # type: ignore[attr-defined]
    assert "\\r[node-0]" in console.file.getvalue()  # type: ignore[attr-defined]


def test_an_error_quoting_node_output_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed setup's or job's last lines travel in the error message."""
    sink = io.StringIO()
    monkeypatch.setattr(display, "stderr", Console(file=sink, force_terminal=False, width=300))
    display.print_error(
        RemoteError(f"setup failed on node-1 (exit 1): {HOSTILE}\n  [node-1] {POSING}", hint=POSING)
    )
    text = sink.getvalue()
    assert printable_only(text)
    assert "\\x1b]52;" in text and "\\r[node-0]" in text
    assert text.count("\n") == 3  # the message's own two lines, and the hint


def test_exec_summary_escapes_a_failure_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = io.StringIO()
    monkeypatch.setattr(display, "stderr", Console(file=sink, force_terminal=False, width=300))
    failed = CommandResult(node="node-1", rank=1, error=f"unreachable: {POSING}")
    assert summaries.exec_summary(GroupResult((failed,)), quiet=False) == 1
    assert printable_only(sink.getvalue()) and "\\r[node-0]" in sink.getvalue()


def test_json_keeps_the_exact_characters() -> None:
    result = CommandResult(node="node-1", rank=1, exit_code=0)
    result.tail.append(HOSTILE)
    document = json.dumps(GroupResult((result,)).to_json())
    assert "\x1b" not in document and "\\u001b]52" in document
    assert json.loads(document)["nodes"][0]["tail"] == [HOSTILE]


INVISIBLE = "\u202e\u2066\u2069\u200b\u200d\u2028\u2029\ufeff\U000e0041"


def test_bidi_separator_and_zero_width_characters_are_escaped() -> None:
    shown = show_controls(f"rm -rf {INVISIBLE}/ok")
    assert shown == (
        "rm -rf \\u202e\\u2066\\u2069\\u200b\\u200d\\u2028\\u2029\\ufeff\\U000e0041/ok"
    )
    assert printable_only(shown)
    assert show_controls("naïve 日本語 ✓ ∑") == "naïve 日本語 ✓ ∑"  # printable text is kept


def test_every_status_line_is_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Node text may reach any line of `status`: SSH errors, the head's heartbeat, a job's
    events, the provider's complaint."""
    from dlvm_cluster.cli import status_commands
    from dlvm_cluster.orchestrate.cluster import report
    from dlvm_cluster.orchestrate.jobs.store import JobRecord
    from dlvm_cluster.orchestrate.nodes.commands import NodeStatus

    hostile = HOSTILE + INVISIBLE
    job = JobRecord("j1", "c", "none", f"train {hostile}", "~", ["node-0"], 1, 0.0, restarts=1)
    job.events.append({"time": 0, "text": hostile})
    node = NodeStatus("node-0", 0, "10.0.0.1", 22, "u", False, hostile, "unreachable")
    crafted = report.ClusterReport(
        cluster="c",
        nodes=(node,),
        jobs=(job,),
        price=None,
        provider_problem=hostile,
        autostop=f"idle 1 min -> stop ({hostile})",
        autostop_problem=hostile,
        usage=hostile,
    )
    monkeypatch.setattr(report, "report", lambda state: crafted)
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.state import ClusterState

    unread = Cluster(ClusterState("c", Path("/nonexistent/c")))  # the report is crafted
    monkeypatch.setattr(status_commands, "resolve", lambda name: unread)
    sink = io.StringIO()
    monkeypatch.setattr(display, "stdout", Console(file=sink, force_terminal=False, width=400))
    status_commands.status_cmd("c", json_output=False)
    text = sink.getvalue() + capsys.readouterr().out
    assert printable_only(text), repr(text)
    assert text.count("\\x1b]52;") >= 6 and text.count("\\u202e") >= 6
