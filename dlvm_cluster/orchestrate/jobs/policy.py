"""What the supervisor does when a run of a job ends without success: a pure decision from
what was seen (no SSH, no provider, no clock), so that every case is tested as a table
(tests/unit/test_recovery_policy.py); supervise.py carries the decision out.

In order:
1. a node of the job was powered off on purpose since the job began (`dlvm stop`, autostop,
   max_hours): the job ends with its nodes; replacing the node would undo the decision;
2. an elastic job whose survivors run on (only non-head nodes were lost, at least MIN are
   left): the lost nodes are replaced and join the running job;
3. nodes were lost (the provider says so, or they do not answer SSH): with `on_node_loss:
   fail`, or on a kind that cannot make machines (ssh), the job fails; else they are
   replaced and the job restarts;
4. a rank failed on a healthy cluster: the job restarts while it has restarts left
   (`max_restarts_on_error`), else it fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunSeen:
    """What the supervisor knows when a run ended without success."""

    powered_off: str  # "node-1 was powered off by autostop", or "" (none on purpose)
    lost: Mapping[str, str]  # node -> why it is gone (the provider's word, or SSH)
    survivors_running: bool  # elastic: the job runs on without the lost nodes
    on_node_loss: str  # the job's setting: "replace" or "fail"
    restarts: int  # relaunches so far
    max_restarts_on_error: int
    replace_refusal: str = ""  # the kind's words when it cannot replace nodes ({names})


@dataclass(frozen=True)
class EndPoweredOff:
    why: str


@dataclass(frozen=True)
class Fail:
    why: str  # "" when the failed rank's own output says it


@dataclass(frozen=True)
class Join:
    """Replace the lost nodes; they join the job that runs on."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class ReplaceAndRestart:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Restart:
    pass


Action = EndPoweredOff | Fail | Join | ReplaceAndRestart | Restart


def decide(seen: RunSeen) -> Action:
    """The next step after a run that did not succeed (the module docstring's order)."""
    if seen.powered_off:
        return EndPoweredOff(seen.powered_off)
    lost = tuple(sorted(seen.lost))
    if lost and seen.on_node_loss == "fail":
        return Fail(f"node(s) lost: {', '.join(seen.lost)}; on_node_loss is fail")
    if lost and seen.replace_refusal:
        return Fail(seen.replace_refusal.format(names=", ".join(lost)))
    if seen.survivors_running and lost:
        return Join(lost)
    if lost:
        return ReplaceAndRestart(lost)
    if seen.restarts >= seen.max_restarts_on_error:
        return Fail("")
    return Restart()


def survivors_go_on(
    span: tuple[int, int] | None, job_nodes: Sequence[str], lost: Mapping[str, str]
) -> bool:
    """Whether an elastic job (`span`: its MIN and MAX nodes; None: not elastic) runs on
    without the lost nodes: some were lost, the head (which hosts the rendezvous) is not
    among them, and at least MIN nodes are left."""
    if span is None or not lost or not job_nodes:
        return False
    survivors = [name for name in job_nodes if name not in lost]
    return job_nodes[0] not in lost and len(survivors) >= span[0]
