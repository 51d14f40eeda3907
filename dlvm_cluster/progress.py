"""How library code reports progress without printing: the CLI passes an implementation.
The plain ones are here (no rich): silent, and the nodes' output lines alone."""

from __future__ import annotations

import re
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


# Control characters a terminal acts on (C0 but tab, DEL, C1); newline is kept only where
# a message spans lines on purpose (show_controls(keep_newlines=True)). Also every format,
# line-separator and paragraph-separator character (Unicode's Cf, Zl, Zp: bidi overrides
# and isolates, zero-width joiners and spaces, U+2028, U+2029): no terminal acts on them,
# but they reorder a line or hide text where it is read (the ranges are Unicode 14's).
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_CONTROLS = re.compile(f"[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
_CONTROLS_BUT_NEWLINE = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return (
        f"\\x{code:02x}"
        if code <= 0xFF
        else f"\\u{code:04x}"
        if code <= 0xFFFF
        else f"\\U{code:08x}"
    )


def show_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` as it may reach a terminal: every control character but tab, and every
    invisible format or separator character, written out as an escape (`\\x1b`, `\\r`,
    `\\u202e`, ...). What nodes send is theirs to choose, and a terminal obeys
    escape sequences (an OSC 52 sets the clipboard, a `\\r` lets a line pose as another
    node's); text output shows them, `--json` keeps the exact characters."""
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(_escape, text) if pattern.search(text) else text


def write_node_line(node: Node, stream: str, text: str) -> None:
    """A node's output line, prefixed with its name: stdout or stderr as on the node, its
    control characters shown as escapes (show_controls). One write per line, so lines from
    many nodes never mix (callers hold their own lock)."""
    target = sys.stdout if stream == "out" else sys.stderr
    target.write(f"[{node.name}] {show_controls(text)}\n")
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
