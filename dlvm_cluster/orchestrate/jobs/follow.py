"""Following one run of a job: how it ended (`RunEnd`), the hang clock, and stopping it on
every node at once from the first failure on (`Stopper`). The watching of a run is
run_watch.py; the loop that decides what comes next is supervise.py; the decision itself
is policy.py."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.launch.output import RankOutput, disagreement, first_cause, gpu_hint
from dlvm_cluster.orchestrate.jobs.on_nodes import stop_job
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.results import CommandResult, GroupResult

# For tests only: the hang timeout in seconds, instead of the cluster file's minutes.
HANG_SECONDS_ENV = "DLVM_HANG_TIMEOUT_SECONDS"
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this many seconds


class JobCancelled(Exception):
    """`cancel` (or `down`) asked the supervisor to stop."""


@dataclass
class RunEnd:
    """How one run of the job ended."""

    result: GroupResult
    reason: str = ""  # why the watcher stopped it ('' when a node's own end did)
    lost: dict[str, str] = field(default_factory=dict)  # node -> what the provider says
    hung: bool = False
    survivors_running: bool = False  # elastic: only lost nodes failed; the others train on
    rescaled: bool = False  # `scale` changed the job's nodes: follow the new set


QUIET_NOTE_S = 30.0  # a job silent this long gets a line saying what its processes are
QUIET_SECONDS_ENV = "DLVM_QUIET_NOTE_SECONDS"  # overrides it (tests)


def quiet_seconds() -> float:
    """How long a job may print nothing before dlvm says what its processes are doing."""
    override = os.environ.get(QUIET_SECONDS_ENV, "")
    return float(override) if override else QUIET_NOTE_S


def hang_seconds(minutes: int | None) -> float | None:
    override = os.environ.get(HANG_SECONDS_ENV, "")
    if override:
        return float(override)
    return None if minutes is None else minutes * 60.0


class Stopper:
    """Stops the job on every node, once, from the moment the first failure is seen: in a
    thread of its own, while the follows of the other nodes are still being wound down."""

    def __init__(self, pool: SshPool, nodes: Sequence[Node], job_id: str) -> None:
        self.pool, self.nodes, self.job_id = pool, nodes, job_id
        self.detected = 0.0
        self.finished = 0.0
        self.problems: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def now(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.detected = time.time()
            self._thread = threading.Thread(target=self._stop, daemon=True)
            self._thread.start()

    def _stop(self) -> None:
        self.problems = stop_job(self.pool, self.nodes, self.job_id, grace=STOP_GRACE)
        self.finished = time.time()

    def wait(self) -> dict[str, str]:
        """Per node, what is left of the job (as stop_job says); stops it first if needed."""
        self.now()
        assert self._thread is not None
        self._thread.join()
        return self.problems


def failure_text(result: GroupResult) -> str:
    first: CommandResult | None = next(
        (r for r in result.results if r.node == result.first_failed), None
    ) or next(iter(result.failed), None)
    return f"{first.node} failed first: {first.describe()}" if first else "stopped"


def failed_run(
    cluster: str,
    job_id: str,
    why: str,
    end: RunEnd,
    outputs: dict[str, RankOutput],
    gpus_per_node: int,
) -> RemoteError:
    """The error a failed job ends with: the node that failed first, the rank's own exception
    (not the launcher's footer that follows it) or its last lines, and whether the ranks
    started from different states; `why`: what the policy said, if anything."""
    result = end.result
    failed = [r for r in result.results if r.node == result.first_failed] or list(result.failed)
    logs = f"full logs: dlvm logs {cluster} {job_id}"
    if end.hung or not failed:
        return RemoteError(
            f"job {job_id} failed: {why or end.reason}; stopped it on every node", hint=logs
        )
    first = failed[0]
    prefix = f"{why}. " if why else ""
    message = (
        f"{prefix}job {job_id} failed on {first.node} ({first.describe()}); "
        "stopped it on the other nodes."
    )
    raised_on, cause = first_cause(outputs, first.node)
    if cause:
        quoted = "\n".join(f"  [{raised_on}] {line}" for line in cause)
        message += f" {raised_on}'s first exception:\n{quoted}"
    else:
        tail = "\n".join(f"  [{first.node}] {line}" for line in list(first.tail)[-10:])
        message += f" Last lines:\n{tail}"
    differ = disagreement(outputs)
    if differ:
        message += f"\nNote: {differ}"
    hints = [gpu_hint(cause, gpus_per_node), logs]
    return RemoteError(message, hint="\n".join(hint for hint in hints if hint))
