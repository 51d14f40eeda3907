"""How library code reports progress without printing: the CLI passes an implementation.
The plain ones are here (no rich): silent, and the nodes' output lines alone."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Protocol

from dlvm_cluster.inventory import Node


@dataclass(frozen=True)
class TerraformEvent:
    """One thing Terraform reported: a resource starting, finishing or failing, or a message."""

    kind: str  # start | progress | complete | errored | provision | plan | summary | message
    address: str = ""
    action: str = ""
    message: str = ""
    elapsed: float = 0.0


class Progress(Protocol):
    def stage(self, text: str) -> None:
        """A new step of a long command begins (Terraform, SSH readiness, sync, setup...)."""

    def note(self, text: str) -> None:
        """Something the user should see, that is not an error."""

    def terraform(self, event: TerraformEvent) -> None:
        """An event streamed from Terraform."""

    def line(self, node: Node, stream: str, text: str) -> None:
        """One line of a node's output."""

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        """done of total units of a step (nodes ready, nodes set up, bytes sent); unit "B"
        means bytes (shown as KB/MB/GB)."""


class SilentProgress:
    """For tests and --quiet: reports nothing."""

    def stage(self, text: str) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def terraform(self, event: TerraformEvent) -> None:
        return None

    def line(self, node: Node, stream: str, text: str) -> None:
        return None

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        return None


def write_node_line(node: Node, stream: str, text: str) -> None:
    """A node's output line, prefixed with its name: stdout or stderr as on the node. One
    write per line, so lines from many nodes never mix (callers hold their own lock)."""
    target = sys.stdout if stream == "out" else sys.stderr
    target.write(f"[{node.name}] {text}\n")
    target.flush()


class NodeLines(SilentProgress):
    """Only the nodes' output (`exec` on the warm path, which has no stages to show), without
    the rich console that ConsoleProgress needs."""

    def __init__(self, *, show: bool = True) -> None:
        self.show = show
        self._lock = threading.Lock()

    def line(self, node: Node, stream: str, text: str) -> None:
        if self.show:
            with self._lock:
                write_node_line(node, stream, text)
