"""What remote work returns, per node: a command's result (gathered into a group result) and
a sync's. Plain data, light to import: the agent's client builds them too."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.inventory import Node

LineSink = Callable[[Node, str, str], None]  # node, "out" | "err", one line without newline


def discard_line(node: Node, stream: str, line: str) -> None:
    """The sink of a run whose lines nobody reads."""
    return None


@dataclass
class CommandResult:
    node: str
    rank: int
    exit_code: int | None = None  # None: the command did not finish (see error)
    error: str = ""  # why it did not finish: unreachable, timed out, interrupted
    duration: float = 0.0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"exit {self.exit_code}"


@dataclass(frozen=True)
class GroupResult:
    results: tuple[CommandResult, ...]
    first_failed: str = ""  # with fail_fast: the node whose failure stopped the others

    @property
    def succeeded(self) -> tuple[CommandResult, ...]:
        return tuple(r for r in self.results if r.ok)

    @property
    def failed(self) -> tuple[CommandResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        """What `exec --json` prints, and what the agent sends its client (read back by
        `node_results`)."""
        return {
            "ok": self.ok,
            "first_failed": self.first_failed or None,
            "nodes": [
                {
                    "name": r.node,
                    "rank": r.rank,
                    "exit_code": r.exit_code,
                    "error": r.error or None,
                    "timed_out": r.timed_out,
                    "seconds": round(r.duration, 3),
                    "tail": list(r.tail),
                }
                for r in self.results
            ],
        }


def node_results(data: dict[str, Any]) -> dict[str, CommandResult]:
    """node name -> its result, from GroupResult.to_json()."""
    found = {}
    for item in data.get("nodes", []):
        code = item.get("exit_code")
        result = CommandResult(
            node=str(item["name"]),
            rank=int(item["rank"]),
            exit_code=None if code is None else int(code),
            error=str(item.get("error") or ""),
            duration=float(item.get("seconds", 0.0)),
            timed_out=bool(item.get("timed_out", False)),
        )
        result.tail.extend(str(line) for line in item.get("tail", []))
        found[result.node] = result
    return found


@dataclass
class SyncResult:
    """What a push (or pull) did on one node."""

    node: str
    sent_files: int = 0
    sent_bytes: int = 0
    deleted: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    error: str = ""
    sent: list[str] = field(default_factory=list)
    # With a limit on deletions: what would have been deleted beyond it, and was not.
    held_back: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error
