"""Warnings to a running job before the capacity under its nodes ends (an EC2 Capacity Block:
EC2 ends the instances at the block's end, whatever runs on them).

The provider records the end in the nodes' environment (`CAPACITY_ENDS_ENV`, which jobs get
too); the supervisor asks `CapacityEnd.due` on every look with the time now and says what it
answers as an event of the job (its log, `status`, `logs`). Each warning comes once: at
WARN_BEFORE_MINUTES before the end (a job started later than one of them gets the most urgent
one due at once, not all of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dlvm_cluster.providers.base import CAPACITY_ENDS_ENV

WARN_BEFORE_MINUTES = (30, 10)


def capacity_end(env: Mapping[str, str]) -> float | None:
    """When the capacity ends (epoch seconds), from the nodes' environment; None when the
    provider recorded no end, or a value that is not an ISO 8601 time with its offset."""
    text = env.get(CAPACITY_ENDS_ENV, "")
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return moment.timestamp()


@dataclass
class CapacityEnd:
    """Which warnings a job has had, for the end it was warned of."""

    ends_at: float | None = None
    said: set[int] = field(default_factory=set)

    def due(self, env: Mapping[str, str], now: float) -> str | None:
        """The warning to give now, once; None when none is due (or the end has passed:
        then the nodes are gone and the supervisor's recovery speaks)."""
        ends = capacity_end(env)
        if ends != self.ends_at:  # a new end (a new block): its warnings come again
            self.ends_at, self.said = ends, set()
        if ends is None or now >= ends:
            return None
        left = ends - now
        reached = [m for m in WARN_BEFORE_MINUTES if left <= m * 60 and m not in self.said]
        if not reached:
            return None
        self.said.update(m for m in WARN_BEFORE_MINUTES if left <= m * 60)
        at = datetime.fromtimestamp(ends, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"the capacity under the nodes ends at {at}, in {_minutes(left)}: its machines "
            f"end then, and the job with them; save a checkpoint before ({CAPACITY_ENDS_ENV})"
        )


def _minutes(seconds: float) -> str:
    whole = max(1, round(seconds / 60))
    return f"{whole} minute{'s' if whole != 1 else ''}"
