"""Supervise a running job: watch every node, stop the job everywhere at the first failure,
replace lost nodes and relaunch, so a lost node becomes a line in the log and a finished run.

One loop serves the foreground `dlvm launch` and, for `launch --detach`, a supervisor process
of the job's own (`orchestrate/jobs/supervisor_process.py`, recorded in the
job's record, gone when the job ends or on `cancel`/`down`). While the job runs it watches:

- each node's job through a follow of its log (a rank that exits, an SSH session that dies or
  stops answering: fan-out's liveness check),
- the provider's view of the machines (`node_states`: preempted, stopped, missing),
- the output: no new line from any rank for `job.hang_timeout_minutes` counts as a failure,
- the end of the capacity under the nodes, where the provider knows it (a Capacity Block):
  the job is warned before it (capacity_end.py).

At the first failure the job is stopped on every node at once (whole process trees, as
`cancel` does), so no rank waits in a collective for a peer that is gone. Then:

- nodes that are lost (the provider says so, or they no longer answer SSH) are replaced alone
  through the provider and set up as `up` sets up new nodes, retried with backoff while that
  fails; or the job fails, with `job.on_node_loss: fail`;
- a rank that failed on a healthy cluster is restarted up to `job.max_restarts_on_error` times
  (default 0: such a failure is usually a bug, and the job fails fast with its last lines);
- the job is relaunched under the same id, appending to its logs; the script resumes from its
  checkpoint.

What happens after a failure is decided by policy.py (a pure function of what was seen);
watching one run is run_watch.py (how it ended, and the error a failed job ends with:
follow.py); replacing lost nodes is replace.py. The supervisor shares the command's
`Cluster` (one SSH pool for the follows, the checks, the replacement's setup and the
relaunch) and changes only its own fields of the job's record, under the record's lock
(`scale` changes its nodes).

Every step is an event in the job's record (`status --json`, `logs`) and in its local
events.log.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dlvm_cluster.errors import DlvmError, RemoteError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.output import RankOutput
from dlvm_cluster.launch.plan import elastic_range, random_port
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.check.run import require_healthy
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.jobs import node_loss, policy
from dlvm_cluster.orchestrate.jobs.capacity_end import CapacityEnd
from dlvm_cluster.orchestrate.jobs.follow import (
    STOP_GRACE,
    JobCancelled,
    RunEnd,
    failed_run,
    failure_text,
)
from dlvm_cluster.orchestrate.jobs.on_nodes import (
    env_names,
    join_running_job,
    start_on_nodes,
    stop_job,
)
from dlvm_cluster.orchestrate.jobs.replace import replace_lost
from dlvm_cluster.orchestrate.jobs.run_watch import WATCH_STEP, JobView, RunWatch
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.remote.results import GroupResult
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import EVENTS_LOG, private_dir

SCALE_RECORD_WAIT = 15.0  # seconds `scale` may take from stopping a node's job to recording it
# The record's fields the supervisor owns; `nodes` it writes only when it relaunches.
OWN_FIELDS = ("state", "ended", "exit_codes", "restarts", "recoveries", "port", "supervisor")


class Supervisor:
    """Runs a started job to its end, recovering it as the module docstring says."""

    def __init__(
        self,
        cluster: Cluster,
        record: JobRecord,
        loaded: LoadedSpec,
        progress: Progress,
        redact: Callable[[str], str],
    ) -> None:
        assert loaded.spec.job is not None
        self.cluster = cluster
        self.state = cluster.state
        self.jobs = cluster.jobs
        self.record = record
        self.loaded = loaded
        self.job = loaded.spec.job
        self.progress = progress
        self.redact = redact
        self.provider = cluster.provider
        self._resume_pending = False
        self._follow_from_now: set[str] = set()  # elastic survivors: their log was shown
        self._outputs: dict[str, RankOutput] = {}  # the current run's, per node
        self._lock = threading.Lock()
        self._capacity = CapacityEnd()
        self.clock: Callable[[], float] = time.time  # the wall clock the capacity ends by

    # -- records and events -------------------------------------------------------------

    def check_cancel(self) -> None:
        if self.jobs.cancel_requested(self.record.id):
            raise JobCancelled

    def save(self, *, nodes: bool = False, event: dict[str, object] | None = None) -> None:
        """Write the supervisor's own fields of the record (with `nodes`: the job's nodes
        too; with `event`: one more event) into the record as it is now, unless the job was
        cancelled meanwhile (then stop here)."""
        mine = self.record
        fields = (*OWN_FIELDS, "nodes") if nodes else OWN_FIELDS

        def change(stored: JobRecord) -> None:
            for name in fields:
                setattr(stored, name, getattr(mine, name))
            if event is not None:
                stored.events.append(event)

        with self._lock:
            self.check_cancel()
            self.jobs.update(mine.id, change)

    def event(self, text: str, *, at: float | None = None) -> None:
        """One step of the supervision (that happened `at`, default now): in the record, the
        local events log, and shown."""
        now = time.time() if at is None else at
        entry: dict[str, object] = {"time": round(now, 3), "text": text}
        with self._lock:
            self.record.events.append(entry)
            folder = private_dir(Path(self.record.local_logs))
            with open(folder / EVENTS_LOG, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))} {text}\n")
        self.progress.note(f"job {self.record.id}: {text}")
        self.save(event=entry)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> JobRecord:
        """Supervise until the job succeeds (returned), fails (RemoteError) or is cancelled
        (RemoteError; Ctrl-C or SIGTERM: KeyboardInterrupt, after stopping it everywhere)."""
        try:
            while True:
                end = self._watch()
                if end.rescaled:
                    continue
                if end.result.ok and not end.reason:
                    self.record.exit_codes = {r.node: r.exit_code for r in end.result.results}
                    self.record.state, self.record.ended = "succeeded", time.time()
                    self.save()
                    return self.record
                self._recover(end)
        except JobCancelled:
            self._cancelled()
            raise RemoteError(
                f"job {self.record.id} was cancelled", hint="it was stopped on every node"
            ) from None
        except KeyboardInterrupt:
            self._cancelled()
            raise
        except DlvmError:
            raise
        except Exception as exc:  # a bug, or node output that slipped through: never "recovering"
            why = f"{type(exc).__name__}: {exc}"[:500]
            self.broke(why)
            raise RemoteError(
                f"job {self.record.id} failed: the supervisor met an unexpected error ({why}); "
                "stopped it on every node",
                hint=f"its log: dlvm logs {self.state.name} {self.record.id}",
            ) from exc

    def broke(self, why: str) -> None:
        """An unexpected error ends the supervision: the job is stopped where it runs (as
        far as can be) and recorded failed, so that nothing is left unsupervised."""
        with contextlib.suppress(Exception):
            inventory = self._inventory()
            stop_job(self.cluster.pool(), inventory.nodes, self.record.id, grace=STOP_GRACE)
        self.record.state, self.record.ended = "failed", time.time()
        entry: dict[str, object] = {
            "time": round(time.time(), 3),
            "text": f"the supervisor failed: {why}",
        }

        def failed(stored: JobRecord) -> None:
            stored.state, stored.ended = "failed", self.record.ended
            stored.events.append(entry)

        self.record.events.append(entry)
        self.jobs.update(self.record.id, failed)

    def _cancelled(self) -> None:
        self.cluster.forget_records()
        inventory = self.cluster.require_inventory()
        stop_job(self.cluster.pool(), inventory.nodes, self.record.id, grace=STOP_GRACE)
        self.record.state, self.record.ended = "cancelled", time.time()

        def cancelled(stored: JobRecord) -> None:
            stored.state, stored.ended = "cancelled", stored.ended or self.record.ended

        self.jobs.update(self.record.id, cancelled)

    def _inventory(self) -> Inventory:
        """The recorded nodes as they are now (`scale` or `up` may have changed them)."""
        self.cluster.forget_records()
        return self.cluster.require_inventory()

    def _watch(self) -> RunEnd:
        """Follow one run of the job (RunWatch) until it ends or the watcher stops it; when
        it did not succeed, stop it on every node before returning."""
        inventory = self._inventory()
        nodes = inventory.select(",".join(self.record.nodes))
        view = JobView(
            job_id=self.record.id,
            logs=Path(self.record.local_logs),
            cancel_requested=lambda: self.jobs.cancel_requested(self.record.id),
            nodes_on_record=self._nodes_on_record,
            lost=lambda inventory, nodes: node_loss.provider_lost(self.cluster, inventory, nodes),
            first_output=self._resumed,
            each_look=lambda: self.warn_before_capacity_ends(inventory.env),
        )
        run = RunWatch(
            self.cluster.pool(),
            inventory,
            nodes,
            self.job,
            view,
            self.progress,
            self.redact,
            from_now=self._follow_from_now,
        )
        self._outputs = run.outputs
        end = run.run()
        if end.result.ok and not end.reason:
            return end
        self._follow_from_now = set()
        stopper = run.stopper
        if end.rescaled or (not stopper.started and self._left_by_scale(end.result)):
            current = self._nodes_on_record()
            self._follow_from_now = {name for name in run.followed if name in current}
            self.record.nodes = current
            self.event(f"nodes changed by scale: following {', '.join(current)}")
            end.rescaled = True
            return end
        if not run.stop_early and not stopper.started and self._survivors_go_on(end, nodes):
            self.event(f"failure: {end.reason or failure_text(end.result)}")
            return end
        stopped = stopper.wait()
        self.check_cancel()
        self.record.state = "recovering"
        self.record.exit_codes = {r.node: r.exit_code for r in end.result.results}
        self.event(f"failure: {end.reason or failure_text(end.result)}", at=stopper.detected)
        left = [name for name, problem in stopped.items() if problem]
        self.event(
            f"job stopped on {len(nodes) - len(left)} node(s)"
            + (f"; not reached: {', '.join(left)}" if left else ""),
            at=stopper.finished,
        )
        return end

    def warn_before_capacity_ends(self, env: Mapping[str, str]) -> None:
        """A warning, as an event of the job, when the capacity under the nodes ends soon."""
        now = self.clock()
        warning = self._capacity.due(env, now)
        if warning:
            self.event(warning, at=now)

    def _resumed(self) -> None:
        """A rank printed in this run: after a restart, that is the job resuming."""
        if self._resume_pending:
            self._resume_pending = False
            self.event(f"resumed: output again after restart {self.record.restarts}")

    def _lost(self, end: RunEnd) -> dict[str, str]:
        return node_loss.lost_nodes(self.cluster, self.record, end.lost)

    def _nodes_on_record(self) -> list[str]:
        """The job's nodes as its record says now (`scale` adds and removes nodes there):
        one file read."""
        return self.jobs.get(self.record.id).nodes

    def _left_by_scale(self, result: GroupResult) -> bool:
        """Whether the run ended because `scale` stopped the job on a node it removes (the
        job there was stopped by dlvm: no exit status; the record drops the node soon)."""
        first = next((r for r in result.results if r.node == result.first_failed), None)
        if first is None or first.error or first.exit_code != 255:
            return False
        deadline = time.monotonic() + SCALE_RECORD_WAIT
        while time.monotonic() < deadline and not self.jobs.cancel_requested(self.record.id):
            if first.node not in self._nodes_on_record():
                return True
            time.sleep(WATCH_STEP)
        return False

    def _survivors_go_on(self, end: RunEnd, nodes: Sequence[Node]) -> bool:
        """Elastic: whether the job runs on without the lost nodes (policy.survivors_go_on);
        then they are replaced and join it, and its survivors' follows go on from the
        current end of their logs."""
        span = elastic_range(self.job)
        if span is None or self.jobs.cancel_requested(self.record.id):
            return False
        end.lost = self._lost(end)
        names = [node.name for node in nodes]
        if not policy.survivors_go_on(span, names, end.lost):
            return False
        end.survivors_running = True
        self._follow_from_now = {name for name in names if name not in end.lost}
        return True

    def _recover(self, end: RunEnd) -> None:
        """Carry out policy.decide's step after a run that did not succeed."""
        powered_off = node_loss.powered_off_on_purpose(self.cluster, self.record)
        lost: dict[str, str] = {}
        if not powered_off:
            lost = end.lost if end.survivors_running else self._lost(end)
        action = policy.decide(
            policy.RunSeen(
                powered_off=powered_off,
                lost=lost,
                survivors_running=end.survivors_running,
                on_node_loss=self.job.on_node_loss,
                restarts=self.record.restarts,
                max_restarts_on_error=self.job.max_restarts_on_error,
                replace_refusal=self.replace_refusal(),
            )
        )
        if isinstance(action, policy.EndPoweredOff):
            self._end_powered_off(action.why)
        for name in sorted(lost):
            runs_on = "; the job runs on without it" if isinstance(action, policy.Join) else ""
            self.event(f"node lost: {name} ({lost[name]}){runs_on}")
        if isinstance(action, policy.Fail):
            self._fail(action.why, end)
        if isinstance(action, policy.Join):
            self._replace(list(action.names))
            self.record.recoveries += 1
            self._join(list(action.names))
            return
        if isinstance(action, policy.ReplaceAndRestart):
            self._replace(list(action.names))
            self.record.recoveries += 1
            self.check_after_recovery()
        self.record.restarts += 1
        self._relaunch()

    def replace_refusal(self) -> str:
        """The kind's words when it cannot make machines again (ssh), else ""."""
        cannot = self.cluster.lacking(Feature.REPLACE)
        return "" if cannot is None else cannot.message

    def _end_powered_off(self, why: str) -> None:
        self.event(f"{why}: the job ends with its nodes")
        self.record.state, self.record.ended = "cancelled", time.time()
        self.save()
        raise RemoteError(
            f"job {self.record.id} ended: {why}",
            hint="start the nodes again (dlvm start or dlvm up) and launch the job again: it "
            "resumes from its checkpoint",
        )

    def check_after_recovery(self) -> None:
        """With job.check, the cluster and its new nodes pass `dlvm check` before the job is
        relaunched on them: a replacement on a bad host fails the job, not hours of GPU time."""
        if not self.job.check:
            return
        self.event("checking the cluster before the relaunch")
        try:
            require_healthy(self.cluster, self.progress)
        except Exception as exc:  # whatever a node made the check raise is a failed check
            why = exc.message if isinstance(exc, DlvmError) else f"{type(exc).__name__}: {exc}"
            self.record.state, self.record.ended = "failed", time.time()
            self.event(f"the check after the recovery failed: {why[:500]}")
            self.save()
            if isinstance(exc, DlvmError):
                raise
            raise RemoteError(f"the check after the recovery failed: {why[:500]}") from exc

    def _fail(self, why: str, end: RunEnd) -> None:
        self.record.state, self.record.ended = "failed", time.time()
        self.save()
        gpus = self.cluster.require_inventory().gpus_per_node
        raise failed_run(self.state.name, self.record.id, why, end, self._outputs, gpus)

    def _replace(self, names: list[str]) -> None:
        replace_lost(
            self.cluster,
            self.loaded,
            names,
            self.progress,
            event=self.event,
            check_cancel=self.check_cancel,
        )

    def _join(self, names: list[str]) -> None:
        """The replaced nodes join the running elastic job, as nodes `scale` adds do."""
        self.check_cancel()
        self._inventory()
        join_running_job(self.cluster, self.loaded, self.record, names)
        self.event(f"{', '.join(names)} joined the running job")

    def _relaunch(self) -> None:
        self.check_cancel()
        inventory = self._inventory()
        port = random_port()
        plan = plan_launch(
            self.job,
            inventory,
            job_id=self.record.id,
            port=port,
            spec_env=env_names(self.loaded),
        )
        start_on_nodes(self.cluster.pool(), inventory, self.loaded, plan, inventory.nodes)
        self.record.port = port
        self.record.nodes = [launch.node.name for launch in plan.launches]
        self.record.state = "running"
        self._resume_pending = True
        self.save(nodes=True)
        self.event(
            f"restart {self.record.restarts}: relaunched on {len(self.record.nodes)} node(s)"
        )
