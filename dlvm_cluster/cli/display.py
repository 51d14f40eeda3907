"""Rendering for humans: progress on stderr, node output on stdout, errors as one message."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Node
from dlvm_cluster.progress import TerraformEvent, show_controls, write_node_line

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

# Decimal units, as their names say (1 MB = 1,000,000 bytes), the largest that fits the total.
_BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("KB", 1e3))


def format_count(done: int, total: int, unit: str = "") -> str:
    """`5/8 nodes`; bytes in one unit chosen by the total (`12.5/100.0 MB`) so both numbers
    read alike."""
    if unit == "B":
        for name, size in _BYTE_UNITS:
            if total >= size:
                return f"{done / size:.1f}/{total / size:.1f} {name}"
    return f"{done}/{total} {unit}".rstrip()


def _colour_mark(text: str) -> str:
    """A note that starts with ✓ or ✗ (a node's setup ended) gets the colours of the
    Terraform lines, so that library code can say it in plain text."""
    body = text.lstrip(" ")
    indent = text[: len(text) - len(body)]
    for mark, colour in (("✓", "green"), ("✗", "red")):
        if body.startswith(mark + " "):
            return f"{indent}[{colour}]{mark}[/{colour}]{body[len(mark) :]}"
    return text


@dataclass
class _Step:
    """A counted step: when it began, during which stage, and whether it reached its total."""

    started: float
    stage: int
    finished: bool = False


class ConsoleProgress:
    """Progress on stderr: a spinner per stage, a line per Terraform resource as it finishes,
    counted steps (nodes ready, nodes set up, bytes sent) live in the spinner and as one line
    when complete, and each node's output lines on stdout prefixed with the node name.

    Without a terminal (CI logs, pipes) counts print only that final line: a log with a line
    per node answering or per chunk sent would bury what matters."""

    def __init__(
        self, *, quiet: bool = False, show_output: bool = True, console: Console | None = None
    ) -> None:
        self.quiet = quiet
        self.show_output = show_output
        self.console = stderr if console is None else console
        self._lock = threading.Lock()  # count() and line() come from worker threads
        self._status: Status | None = None
        self._stage = ""
        self._stages = 0  # stages begun so far: a step finished in an earlier one may run again
        self._stage_started = time.monotonic()
        self._steps: dict[str, _Step] = {}

    def _spin(self, text: str) -> None:
        """Show `text` in the spinner (started on first use); terminals only."""
        if self._status is None:
            self._status = self.console.status(escape(text))
            self._status.start()
        else:
            self._status.update(escape(text))

    def stage(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._stage = text
            self._stages += 1
            self._stage_started = time.monotonic()
            if self.console.is_terminal:
                self._spin(text)
            else:
                self.console.print(f"[bold]==>[/bold] {escape(text)}")

    def note(self, text: str) -> None:
        if not self.quiet:  # plain text that may quote a node (why its setup failed)
            self.console.print(_colour_mark(escape(show_controls(text))))

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        """Live in the spinner on a terminal; one `✓ step: total/total (time)` line when the
        step completes, timed from the stage of the same name, else from its first count."""
        if self.quiet:
            return
        with self._lock:
            state = self._step(step)
            if state.finished:
                return
            text = f"{step}: {format_count(done, total, unit)}"
            if self.console.is_terminal:
                self._spin(text)
            if done < total:
                return
            state.finished = True
            elapsed = time.monotonic() - state.started
            self.console.print(f"  [green]✓[/green] {escape(text)} ({elapsed:.1f}s)")

    def _step(self, step: str) -> _Step:
        """The step's record. A finished step ignores late counts (threads may report out of
        order) until a new stage begins: then the same step runs anew (scale after up)."""
        state = self._steps.get(step)
        if state is None or (state.finished and state.stage != self._stages):
            started = self._stage_started if step == self._stage else time.monotonic()
            state = self._steps[step] = _Step(started, self._stages)
        return state

    def terraform(self, event: TerraformEvent) -> None:
        if self.quiet:
            return
        if event.kind == "complete":
            verb = {"create": "created", "delete": "destroyed", "update": "updated"}.get(
                event.action, event.action or "done"
            )
            self.console.print(f"  [green]✓[/green] {event.address} {verb} ({event.elapsed:.1f}s)")
        elif event.kind == "errored":
            self.console.print(f"  [red]✗[/red] {event.address} failed ({event.elapsed:.1f}s)")
        elif event.kind == "start" and self._status is not None:
            self._status.update(f"terraform: {event.address} ...")

    def line(self, node: Node, stream: str, text: str) -> None:
        if not self.show_output:
            return
        with self._lock:
            write_node_line(node, stream, text)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()  # the spinner never outlives the command, whatever ends it


class _NodeOutputToStderr(ConsoleProgress):
    """--json: stdout carries only the JSON document, so the nodes' lines go to stderr."""

    def line(self, node: Node, stream: str, text: str) -> None:
        super().line(node, "err", text)


def console_progress(*, quiet: bool = False, json_output: bool = False) -> ConsoleProgress:
    """Progress for a long command: --json and --quiet hide it; --quiet also hides the nodes'
    output (it stays in the job logs), --json moves it to stderr."""
    if json_output:
        return _NodeOutputToStderr(quiet=True)
    return ConsoleProgress(quiet=quiet, show_output=not quiet)


def print_error(error: DlvmError) -> None:
    # Messages quote the user's text and the nodes' output (a failed setup's last lines): never
    # read it as rich markup, and show its control characters as escapes.
    message = show_controls(error.message, keep_newlines=True)
    stderr.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True, emoji=False)
    if error.hint:
        hint = show_controls(error.hint, keep_newlines=True)
        stderr.print(f"[yellow]hint:[/yellow] {escape(hint)}", soft_wrap=True, emoji=False)
