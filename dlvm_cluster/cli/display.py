"""Rendering for humans: progress on stderr, node output on stdout, errors as one message."""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Node
from dlvm_cluster.provision.terraform import TerraformEvent

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


class ConsoleProgress:
    """Progress on stderr: a spinner per stage, a line per Terraform resource as it finishes,
    and each node's output lines on stdout prefixed with the node name."""

    def __init__(self, *, quiet: bool = False, show_output: bool = True) -> None:
        self.quiet = quiet
        self.show_output = show_output
        self._lock = threading.Lock()
        self._status: Status | None = None
        self._stage_started = time.monotonic()

    def stage(self, text: str) -> None:
        if self.quiet:
            return
        self._stage_started = time.monotonic()
        if self._status is None and stderr.is_terminal:
            self._status = stderr.status(text)
            self._status.start()
        elif self._status is not None:
            self._status.update(text)
        else:
            stderr.print(f"[bold]==>[/bold] {text}")

    def note(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text)

    def terraform(self, event: TerraformEvent) -> None:
        if self.quiet:
            return
        if event.kind == "complete":
            verb = {"create": "created", "delete": "destroyed", "update": "updated"}.get(
                event.action, event.action or "done"
            )
            stderr.print(f"  [green]✓[/green] {event.address} {verb} ({event.elapsed:.1f}s)")
        elif event.kind == "errored":
            stderr.print(f"  [red]✗[/red] {event.address} failed ({event.elapsed:.1f}s)")
        elif event.kind == "start" and self._status is not None:
            self._status.update(f"terraform: {event.address} ...")

    def line(self, node: Node, stream: str, text: str) -> None:
        if not self.show_output:
            return
        with self._lock:
            target = sys.stdout if stream == "out" else sys.stderr
            target.write(f"[{node.name}] {text}\n")
            target.flush()

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def print_error(error: DlvmError) -> None:
    # Messages quote the user's text (keys, paths, output): never read it as rich markup.
    stderr.print(
        f"[bold red]error:[/bold red] {escape(error.message)}", soft_wrap=True, emoji=False
    )
    if error.hint:
        stderr.print(f"[yellow]hint:[/yellow] {escape(error.hint)}", soft_wrap=True, emoji=False)
