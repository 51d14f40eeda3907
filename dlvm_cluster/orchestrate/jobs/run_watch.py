"""Watching one run of a job until it ends: every node's log followed at once (fan-out,
fail_fast) and, beside the follows, a watcher thread that trips the run on a cancel
request, a change of the job's nodes (`scale`), a machine the provider calls lost, or no
output from any rank for the hang timeout, says what the ranks do when they are quiet, and
lets the supervisor look too at every step (the capacity's end).

What the end of a run means (stop, recover, follow a new set of nodes) is the supervisor's
(supervise.py), decided by policy.py; how a run ended is follow.py's `RunEnd`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.output import RankOutput, quiet_activity
from dlvm_cluster.launch.plan import elastic_range
from dlvm_cluster.orchestrate.jobs.follow import (
    JobCancelled,
    RunEnd,
    Stopper,
    hang_seconds,
    quiet_seconds,
)
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.fanout import Cancellation, run_on_nodes
from dlvm_cluster.remote.pool import SshPool, for_each_node
from dlvm_cluster.remote.results import CommandResult, GroupResult
from dlvm_cluster.spec.model import Job
from dlvm_cluster.state import private_dir

WATCH_STEP = 0.5  # seconds between looks at the cancel request and the output clock
PROVIDER_POLL = 2.0  # seconds between asking the provider how the machines are


@dataclass(frozen=True)
class JobView:
    """What the watcher asks of the job while a run goes on (the supervisor answers)."""

    job_id: str
    logs: Path  # the job's local log folder: each node's output is appended there
    cancel_requested: Callable[[], bool]
    nodes_on_record: Callable[[], list[str]]  # one read of the job's record
    lost: Callable[[Inventory, Sequence[Node]], dict[str, str]]  # the provider's word
    first_output: Callable[[], None]  # once, when a rank prints during this run
    each_look: Callable[[], None]  # the supervisor's own look every step (the capacity's end)


class RunWatch:
    """One run of the job on `nodes`, followed until it ends (see the module docstring).
    `from_now`: nodes whose log was shown already (an elastic job's survivors): followed from
    its current end. After `run()`, `outputs` holds what each rank printed, `stopper` whether
    and when the job was stopped everywhere."""

    def __init__(
        self,
        pool: SshPool,
        inventory: Inventory,
        nodes: Sequence[Node],
        job: Job,
        view: JobView,
        progress: Progress,
        redact: Callable[[str], str],
        *,
        from_now: set[str],
    ) -> None:
        self.pool, self.inventory, self.nodes = pool, inventory, nodes
        self.job, self.view, self.progress, self.redact = job, view, progress, redact
        self.from_now = from_now
        self.followed = {node.name for node in nodes}
        self.outputs = {node.name: RankOutput() for node in nodes}
        self.stopper = Stopper(pool, nodes, view.job_id)
        # An elastic job may keep running on the survivors of a lost node: the decision to
        # stop it then waits for the lost-node check.
        self.stop_early = elastic_range(job) is None or job.on_node_loss == "fail"
        self._end = RunEnd(GroupResult(()))
        self._cancel = Cancellation()
        self._done = threading.Event()
        self._started = time.monotonic()
        self._last_output = self._started
        self._said_quiet = self._started
        self._told_output = False

    def run(self) -> RunEnd:
        """Follow every node's run until all have ended or the watcher stopped them."""
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        end = self._end
        try:
            end.result = run_on_nodes(
                self.pool,
                self.nodes,
                lambda node: jobcontrol.follow(
                    self.inventory.cluster, self.view.job_id, from_now=node.name in self.from_now
                ),
                sink=self._line,
                log_dir=private_dir(self.view.logs),
                fail_fast=True,
                redact=self.redact,
                cancel=self._cancel,
                on_done=self._ended,
            )
        finally:
            self._done.set()
            watcher.join()
        cancel = self._cancel
        end.reason = cancel.reason if cancel.is_set() and not end.result.first_failed else ""
        return end

    def _line(self, node: Node, stream: str, text: str) -> None:
        self._last_output = time.monotonic()
        self.outputs[node.name].feed(text)
        self.progress.line(node, stream, text)

    def _ended(self, result: CommandResult) -> None:
        if not result.ok and self.stop_early:  # stop the job now, not after the follows
            self.stopper.now()

    def _trip(self, reason: str, *, stop: bool = True) -> None:
        self._cancel.set(reason)
        if stop:
            self.stopper.now()

    def _watch(self) -> None:
        try:
            self._look()
        except JobCancelled:
            self._trip("cancelled")

    def _look(self) -> None:
        """Every WATCH_STEP until the follows end, or until one reason to trip the run."""
        hang = hang_seconds(self.job.hang_timeout_minutes)
        asked = 0.0
        quiet_step = quiet_seconds()
        end = self._end
        while not self._done.wait(WATCH_STEP):
            now = time.monotonic()
            if now - max(self._last_output, self._said_quiet) >= quiet_step:
                self._said_quiet = now
                self.say_what_runs(now - self._last_output)
            if self.view.cancel_requested():
                self._trip("cancelled")
                return
            if set(self.view.nodes_on_record()) != self.followed:
                end.rescaled = True
                self._trip("the job's nodes changed", stop=False)
                return
            self.view.each_look()
            if not self._told_output and self._last_output > self._started:
                self._told_output = True
                self.view.first_output()
            if time.monotonic() - asked >= PROVIDER_POLL:
                asked = time.monotonic()
                lost = self.view.lost(self.inventory, self.nodes)
                if lost:
                    end.lost = lost
                    said = ", ".join(f"{n} {why}" for n, why in lost.items())
                    self._trip(f"node lost: {said}", stop=self.stop_early)
                    return
            if hang is not None and time.monotonic() - self._last_output > hang:
                end.hung = True
                self._trip(f"hung: no output from any rank for {hang:g}s")
                return

    def say_what_runs(self, quiet_for: float) -> None:
        """A job silent for a while: what its processes are on each node (a first DeepSpeed
        op build compiles for minutes without a line)."""
        found: dict[str, list[str]] = {}
        activity = jobcontrol.activity(self.inventory.cluster, self.view.job_id)

        def one(connection: Connection) -> str:
            _, out, _ = connection.run(activity)
            found[connection.node.name] = out.split()
            return ""

        try:
            for_each_node(self.pool, self.nodes, one, lambda node, error: "")
        except DlvmError:
            return
        line = quiet_activity(
            {node.name: found.get(node.name, []) for node in self.nodes}, quiet_for
        )
        if line:
            self.progress.note(f"[dlvm] {line}")
