"""Supervise a running job: watch every node, stop the job everywhere at the first failure,
replace lost nodes and relaunch, so a lost node becomes a line in the log and a finished run.

One loop serves the foreground `dlvm launch` and, for `launch --detach`, a supervisor process
of the job's own (`orchestrate/jobs/supervisor_process.py`, recorded in the
job's record, gone when the job ends or on `cancel`/`down`). While the job runs it watches:

- each node's job through a follow of its log (a rank that exits, an SSH session that dies or
  stops answering: fan-out's liveness check),
- the provider's view of the machines (`node_states`: preempted, stopped, missing),
- the output: no new line from any rank for `job.hang_timeout_minutes` counts as a failure.

At the first failure the job is stopped on every node at once (whole process trees, as
`cancel` does), so no rank waits in a collective for a peer that is gone. Then:

- nodes that are lost (the provider says so, or they no longer answer SSH) are replaced alone
  through the provider and set up as `up` sets up new nodes, retried with backoff while that
  fails; or the job fails, with `job.on_node_loss: fail`;
- a rank that failed on a healthy cluster is restarted up to `job.max_restarts_on_error` times
  (default 0: such a failure is usually a bug, and the job fails fast with its last lines);
- the job is relaunched under the same id, appending to its logs; the script resumes from its
  checkpoint.

Every step is an event in the job's record (`status --json`, `logs`) and in its local
events.log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlvm_cluster import providers, secret_env
from dlvm_cluster.errors import DlvmError, RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.plan import elastic_range, random_port
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.check.run import require_healthy
from dlvm_cluster.orchestrate.cluster.files import install_secrets, push_files
from dlvm_cluster.orchestrate.cluster.power import provider_of, stop_marks
from dlvm_cluster.orchestrate.cluster.prepare import converge_request, prepare_nodes, with_storage
from dlvm_cluster.orchestrate.cluster.reach import ssh_reach
from dlvm_cluster.orchestrate.cluster.records import (
    applied_spec,
    open_pool,
    require_inventory,
    save_inventory,
    scaled_count,
)
from dlvm_cluster.orchestrate.jobs.on_nodes import env_names, start_on_nodes, stop_job
from dlvm_cluster.orchestrate.jobs.store import JobRecord, cancel_requested, find_job, save_job
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NodeState, Provider
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.fanout import Cancellation, run_on_nodes
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.results import CommandResult, GroupResult
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState, private_dir

# For tests only: the hang timeout in seconds, instead of the cluster file's minutes.
HANG_SECONDS_ENV = "DLVM_HANG_TIMEOUT_SECONDS"
WATCH_STEP = 0.5  # seconds between looks at the cancel request and the output clock
PROVIDER_POLL = 2.0  # seconds between asking the provider how the machines are
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this many seconds
SCALE_RECORD_WAIT = 15.0  # seconds `scale` may take from stopping a node's job to recording it
REPLACE_BACKOFF = (5.0, 15.0, 30.0, 60.0, 120.0)  # seconds before each new try to replace
EVENTS_LOG = "events.log"
SUPERVISOR_LOG = "supervisor.log"


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


def hang_seconds(minutes: int | None) -> float | None:
    override = os.environ.get(HANG_SECONDS_ENV, "")
    if override:
        return float(override)
    return None if minutes is None else minutes * 60.0


class Supervisor:
    """Runs a started job to its end, recovering it as the module docstring says."""

    def __init__(
        self,
        state: ClusterState,
        record: JobRecord,
        loaded: LoadedSpec,
        progress: Progress,
        redact: Callable[[str], str],
        *,
        provider: Provider | None = None,
    ) -> None:
        """`provider`: the cluster's, unless given (tests hand one with its API and Terraform)."""
        assert loaded.spec.job is not None
        self.state = state
        self.record = record
        self.loaded = loaded
        self.job = loaded.spec.job
        self.progress = progress
        self.redact = redact
        self.provider = provider or provider_of(state)
        self._resume_pending = False
        self._follow_from_now: set[str] = set()  # elastic survivors: their log was shown
        self._lock = threading.Lock()

    # -- records and events -------------------------------------------------------------

    def check_cancel(self) -> None:
        if cancel_requested(self.state, self.record.id):
            raise JobCancelled

    def save(self) -> None:
        """Save the record, unless the job was cancelled meanwhile (then stop here)."""
        with self._lock:
            self.check_cancel()
            save_job(self.state, self.record)

    def event(self, text: str, *, at: float | None = None) -> None:
        """One step of the supervision (that happened `at`, default now): in the record, the
        local events log, and shown."""
        now = time.time() if at is None else at
        with self._lock:
            self.record.events.append({"time": round(now, 3), "text": text})
            folder = private_dir(Path(self.record.local_logs))
            with open(folder / EVENTS_LOG, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))} {text}\n")
        self.progress.note(f"job {self.record.id}: {text}")
        self.save()

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
            inventory = require_inventory(self.state)
            with open_pool(self.state, inventory) as pool:
                stop_job(pool, inventory.nodes, self.record.id, grace=STOP_GRACE)
        self.record.state, self.record.ended = "failed", time.time()
        with contextlib.suppress(Exception):
            self.record.events.append(
                {"time": round(time.time(), 3), "text": f"the supervisor failed: {why}"}
            )
        save_job(self.state, self.record)

    def _cancelled(self) -> None:
        inventory = require_inventory(self.state)
        with open_pool(self.state, inventory) as pool:
            stop_job(pool, inventory.nodes, self.record.id, grace=STOP_GRACE)
        self.record.state, self.record.ended = "cancelled", time.time()
        save_job(self.state, self.record)

    def _watch(self) -> RunEnd:
        """Follow the job on its nodes until it ends or the watcher stops it; when it did
        not succeed, stop it on every node before returning."""
        inventory = require_inventory(self.state)
        nodes = inventory.select(",".join(self.record.nodes))
        cancel = Cancellation()
        end = RunEnd(GroupResult(()))
        started = time.monotonic()
        last_output = [started]
        done = threading.Event()

        def sink(node: Node, stream: str, text: str) -> None:
            last_output[0] = time.monotonic()
            self.progress.line(node, stream, text)

        # An elastic job may keep running on the survivors of a lost node: the decision to
        # stop it then waits for the lost-node check.
        stop_early = elastic_range(self.job) is None or self.job.on_node_loss == "fail"

        def trip(reason: str, stop: bool = True) -> None:
            cancel.set(reason)
            if stop:
                stopper.now()

        def watch() -> None:
            try:
                look()
            except JobCancelled:
                trip("cancelled")

        def look() -> None:
            hang = hang_seconds(self.job.hang_timeout_minutes)
            asked = 0.0
            while not done.wait(WATCH_STEP):
                if cancel_requested(self.state, self.record.id):
                    trip("cancelled")
                    return
                if set(self._nodes_on_record()) != followed:
                    end.rescaled = True
                    trip("the job's nodes changed", stop=False)
                    return
                if self._resume_pending and last_output[0] > started:
                    self._resume_pending = False
                    self.event(f"resumed: output again after restart {self.record.restarts}")
                if time.monotonic() - asked >= PROVIDER_POLL:
                    asked = time.monotonic()
                    lost = self.provider_lost(inventory, nodes)
                    if lost:
                        end.lost = lost
                        said = ", ".join(f"{n} {why}" for n, why in lost.items())
                        trip(f"node lost: {said}", stop=stop_early)
                        return
                if hang is not None and time.monotonic() - last_output[0] > hang:
                    end.hung = True
                    trip(f"hung: no output from any rank for {hang:g}s")
                    return

        def ended(result: CommandResult) -> None:
            if not result.ok and stop_early:  # stop the job now, not after the follows
                stopper.now()

        followed = {node.name for node in nodes}
        with open_pool(self.state, inventory) as pool:
            stopper = _Stopper(pool, nodes, self.record.id)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                end.result = run_on_nodes(
                    pool,
                    nodes,
                    lambda node: jobcontrol.follow(
                        inventory.cluster,
                        self.record.id,
                        from_now=node.name in self._follow_from_now,
                    ),
                    sink=sink,
                    log_dir=private_dir(Path(self.record.local_logs)),
                    fail_fast=True,
                    redact=self.redact,
                    cancel=cancel,
                    on_done=ended,
                )
            finally:
                done.set()
                watcher.join()
            end.reason = cancel.reason if cancel.is_set() and not end.result.first_failed else ""
            if end.result.ok and not end.reason:
                return end
            self._follow_from_now = set()
            if end.rescaled or (not stopper.started and self._left_by_scale(end.result)):
                current = self._nodes_on_record()
                self._follow_from_now = {name for name in followed if name in current}
                self.record.nodes = current
                self.event(f"nodes changed by scale: following {', '.join(current)}")
                end.rescaled = True
                return end
            if not stop_early and not stopper.started and self._survivors_go_on(end, nodes):
                self.event(f"failure: {end.reason or _failure(end.result)}")
                return end
            stopped = stopper.wait()
        self.check_cancel()
        self.record.state = "recovering"
        self.record.exit_codes = {r.node: r.exit_code for r in end.result.results}
        self.event(f"failure: {end.reason or _failure(end.result)}", at=stopper.detected)
        left = [name for name, problem in stopped.items() if problem]
        self.event(
            f"job stopped on {len(nodes) - len(left)} node(s)"
            + (f"; not reached: {', '.join(left)}" if left else ""),
            at=stopper.finished,
        )
        return end

    def provider_lost(self, inventory: Inventory, nodes: Sequence[Node]) -> dict[str, str]:
        """The nodes whose machine the provider says is not running, and its word for it."""
        try:
            states = self.provider.node_states(inventory)
        except DlvmError:  # no API now: SSH alone tells
            return {}
        return {
            node.name: str(states[node.name])
            for node in nodes
            if states.get(node.name, NodeState.RUNNING) != NodeState.RUNNING
        }

    def _lost_nodes(self, end: RunEnd) -> dict[str, str]:
        """The job's nodes that are gone: as the provider says, or not answering SSH."""
        inventory = require_inventory(self.state)
        nodes = inventory.select(",".join(self.record.nodes))
        lost = dict(end.lost) or self.provider_lost(inventory, nodes)
        subset = dataclasses.replace(inventory, nodes=tuple(nodes))
        for name in ssh_reach(self.state).unreachable(subset):
            lost.setdefault(name, "unreachable over SSH")
        return lost

    def _nodes_on_record(self) -> list[str]:
        """The job's nodes as its record says now (`scale` adds and removes nodes there)."""
        return find_job(self.state, self.record.id).nodes

    def _left_by_scale(self, result: GroupResult) -> bool:
        """Whether the run ended because `scale` stopped the job on a node it removes (the
        job there was stopped by dlvm: no exit status; the record drops the node soon)."""
        first = next((r for r in result.results if r.node == result.first_failed), None)
        if first is None or first.error or first.exit_code != 255:
            return False
        deadline = time.monotonic() + SCALE_RECORD_WAIT
        while time.monotonic() < deadline and not cancel_requested(self.state, self.record.id):
            if first.node not in self._nodes_on_record():
                return True
            time.sleep(WATCH_STEP)
        return False

    def _survivors_go_on(self, end: RunEnd, nodes: Sequence[Node]) -> bool:
        """Elastic: whether the job runs on without the lost nodes (the head, which hosts
        the rendezvous, is not among them, and MIN nodes are left); then they are replaced
        and join it, and its survivors' follows go on from the current end of their logs."""
        span = elastic_range(self.job)
        if span is None or cancel_requested(self.state, self.record.id):
            return False
        end.lost = self._lost_nodes(end)
        survivors = [node.name for node in nodes if node.name not in end.lost]
        if not end.lost or nodes[0].name in end.lost or len(survivors) < span[0]:
            return False
        end.survivors_running = True
        self._follow_from_now = set(survivors)
        return True

    def _recover(self, end: RunEnd) -> None:
        self._end_if_powered_off_on_purpose()
        if end.survivors_running:
            names = sorted(end.lost)
            for name in names:
                self.event(f"node lost: {name} ({end.lost[name]}); the job runs on without it")
            self._require_replace(names, end)
            self._replace(names)
            self.record.recoveries += 1
            self._join(names)
            return
        lost = self._lost_nodes(end)
        if lost:
            for name, why in lost.items():
                self.event(f"node lost: {name} ({why})")
            if self.job.on_node_loss == "fail":
                self._fail(f"node(s) lost: {', '.join(lost)}; on_node_loss is fail", end)
            self._require_replace(sorted(lost), end)
            self._replace(sorted(lost))
            self.record.recoveries += 1
            self.check_after_recovery()
        elif self.record.restarts >= self.job.max_restarts_on_error:
            self._fail("", end)
        self.record.restarts += 1
        self._relaunch()

    def powered_off_on_purpose(self) -> str:
        """Which of the job's nodes was powered off on purpose (`dlvm stop`, autostop,
        max_hours) since the job began, and by what, or "": a stop is a decision the
        supervisor must not undo by replacing the node. The mark is read whatever the
        machine's state: a node records it before its processes end, so it is there before
        the provider can call the node stopped (a machine that vanished has none)."""
        inventory = require_inventory(self.state)
        marks = stop_marks(self.state, inventory)
        for name in self.record.nodes:
            mark = marks.get(name)
            if mark is not None and mark.at >= self.record.started:
                return f"{name} was powered off by {mark.by}"
        return ""

    def _end_if_powered_off_on_purpose(self) -> None:
        why = self.powered_off_on_purpose()
        if not why:
            return
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
            require_healthy(self.state, self.progress)
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
        result = end.result
        failed = [r for r in result.results if r.node == result.first_failed] or list(result.failed)
        if end.hung or not failed:
            detail = why or end.reason
            raise RemoteError(
                f"job {self.record.id} failed: {detail}; stopped it on every node",
                hint=f"full logs: dlvm logs {self.state.name} {self.record.id}",
            )
        first = failed[0]
        tail = "\n".join(f"  [{first.node}] {line}" for line in list(first.tail)[-10:])
        prefix = f"{why}. " if why else ""
        raise RemoteError(
            f"{prefix}job {self.record.id} failed on {first.node} ({first.describe()}); "
            f"stopped it on the other nodes. Last lines:\n{tail}",
            hint=f"full logs: dlvm logs {self.state.name} {self.record.id}",
        )

    def _require_replace(self, names: list[str], end: RunEnd) -> None:
        """A provider that cannot make machines (ssh) fails the job, in its own words."""
        cannot = providers.lacking(self.loaded.spec.provider.kind, Feature.REPLACE)
        if cannot is not None:
            self._fail(cannot.message.format(names=", ".join(names)), end)

    def _replace(self, names: list[str]) -> None:
        """Replace the lost nodes alone and set them up; retried with backoff until it works
        or the job is cancelled (a request the provider refuses outright fails the job)."""
        applied = applied_spec(self.state)
        before = require_inventory(self.state)
        old_ids = {
            node.name: self.provider.provider_id(node)
            for node in before.nodes
            if node.name in names
        }
        for attempt in range(1, 1_000_000):
            self.check_cancel()
            try:
                with self.state.lock("recover"):
                    inventory = self.replace_machines(applied, names, old_ids)
                    self._set_up(inventory, applied, names)
                self.event(f"setup done on {', '.join(names)}")
                return
            except UsageError:
                raise
            except DlvmError as exc:
                delay = REPLACE_BACKOFF[min(attempt, len(REPLACE_BACKOFF)) - 1]
                self.event(
                    f"replacing {', '.join(names)} failed (try {attempt}): {exc}; "
                    f"trying again in {delay:g}s"
                )
                self._sleep(delay)

    def replace_machines(
        self, applied: LoadedSpec, names: list[str], old_ids: dict[str, str]
    ) -> Inventory:
        """The provider remakes the named nodes' machines alone; the new inventory, recorded."""
        request = converge_request(applied, self.state, self.progress)
        inventory = with_storage(self.provider.replace_nodes(request, names), applied.spec)
        save_inventory(self.state, inventory)
        for node in inventory.nodes:
            if node.name in names:
                self.event(
                    f"node replaced: {node.name} {old_ids.get(node.name, '?')} -> "
                    f"{self.provider.provider_id(node)} (host key "
                    f"{node.host_key_fingerprint})"
                )
        return inventory

    def _set_up(self, inventory: Inventory, applied: LoadedSpec, names: list[str]) -> None:
        """Keys, mesh, secrets, storage, files and setup on the new nodes, as `up` does."""
        new = [node for node in inventory.nodes if node.name in names]
        with open_pool(self.state, inventory) as pool:
            scaled = scaled_count(self.state) is not None
            prepare_nodes(
                pool, self.state, inventory, applied, self.progress, nodes=new, scaled=scaled
            )
            # the job's own spec may name more secrets and files than the applied one
            install_secrets(pool, self.state, new, secret_env.resolve(self.loaded.spec))
            if self.loaded.spec.files:
                push_files(pool, self.loaded, new, self.progress)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_cancel()
            time.sleep(min(WATCH_STEP, max(0.0, deadline - time.monotonic())))

    def _join(self, names: list[str]) -> None:
        """Start the elastic job's launcher on the replaced nodes: they join its next
        rendezvous, as nodes that `scale` adds do."""
        self.check_cancel()
        inventory = require_inventory(self.state)
        plan = plan_launch(
            self.job,
            inventory,
            job_id=self.record.id,
            port=self.record.port,
            spec_env=env_names(self.loaded),
        )
        joining = [node for node in inventory.nodes if node.name in names]
        with open_pool(self.state, inventory) as pool:
            start_on_nodes(pool, inventory, self.loaded, plan, joining)
        self.event(f"{', '.join(names)} joined the running job")

    def _relaunch(self) -> None:
        self.check_cancel()
        inventory = require_inventory(self.state)
        port = random_port()
        plan = plan_launch(
            self.job,
            inventory,
            job_id=self.record.id,
            port=port,
            spec_env=env_names(self.loaded),
        )
        with open_pool(self.state, inventory) as pool:
            start_on_nodes(pool, inventory, self.loaded, plan, inventory.nodes)
        self.record.port = port
        self.record.nodes = [launch.node.name for launch in plan.launches]
        self.record.state = "running"
        self._resume_pending = True
        self.event(
            f"restart {self.record.restarts}: relaunched on {len(self.record.nodes)} node(s)"
        )


class _Stopper:
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


def _failure(result: GroupResult) -> str:
    first: CommandResult | None = next(
        (r for r in result.results if r.node == result.first_failed), None
    ) or next(iter(result.failed), None)
    return f"{first.node} failed first: {first.describe()}" if first else "stopped"
