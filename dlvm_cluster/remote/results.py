"""What a remote command returns: one result per node, gathered into a group result."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


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
