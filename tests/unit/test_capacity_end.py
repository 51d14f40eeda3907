"""A running job is warned before the capacity under its nodes ends (an EC2 Capacity Block,
whose end the aws provider puts in the nodes' environment): 30 and 10 minutes before, once
each, as events of the job (its record, which `status` shows, and its events log). Times come
from a fake clock: nothing here waits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.jobs.capacity_end import CapacityEnd, capacity_end
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.jobs.supervise import Supervisor
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.base import CAPACITY_ENDS_ENV
from dlvm_cluster.state import EVENTS_LOG, ClusterState

ENDS = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)
ENV = {CAPACITY_ENDS_ENV: ENDS.isoformat()}  # as the aws provider writes it
END = ENDS.timestamp()


def minutes_before(minutes: float) -> float:
    return END - minutes * 60


def test_each_warning_comes_once_at_30_and_10_minutes_before_the_end() -> None:
    warned = CapacityEnd()
    said = {
        left: warned.due(ENV, minutes_before(left)) for left in (45, 31, 30, 29, 12, 10, 9, 1, 0)
    }
    assert [left for left, text in said.items() if text] == [30, 10]
    assert said[30] == (
        "the capacity under the nodes ends at 2026-12-05 23:00 UTC, in 30 minutes: its machines "
        "end then, and the job with them; save a checkpoint before (DLVM_CAPACITY_ENDS_AT)"
    )
    assert said[10] is not None and "in 10 minutes" in said[10]


def test_a_job_started_late_gets_the_most_urgent_warning_alone() -> None:
    warned = CapacityEnd()
    text = warned.due(ENV, minutes_before(7.4))
    assert text is not None and "in 7 minutes" in text
    assert warned.due(ENV, minutes_before(5)) is None  # the 30-minute one is not said after it
    assert CapacityEnd().due(ENV, END + 60) is None  # ended: the recovery speaks, not this


def test_a_new_end_is_warned_of_again_and_odd_values_are_no_end() -> None:
    warned = CapacityEnd()
    assert warned.due(ENV, minutes_before(20)) is not None
    later = {CAPACITY_ENDS_ENV: "2026-12-06T23:00:00+00:00"}  # the next block
    assert warned.due(later, minutes_before(20)) is None  # a day before its end
    assert warned.due(later, END + 86400 - 600) is not None
    for value in ("", "tomorrow", "2026-12-05T23:00:00", "2026-13-05T23:00:00+00:00"):
        assert capacity_end({CAPACITY_ENDS_ENV: value}) is None
    assert capacity_end({}) is None


def test_the_supervisor_writes_the_warnings_into_the_jobs_record_and_log(
    tmp_path: Path,
) -> None:
    loaded = load_spec_text(
        "name: t\nprovider: {kind: local}\nnodes: {count: 2}\n"
        "job: {framework: none, command: train}\n",
        Path("/nowhere/t.yaml"),
    )
    state = ClusterState("t", tmp_path / "t")
    record = JobRecord(
        "j1", "t", "none", "train", "~", ["node-0", "node-1"], 20001, 0.0,
        local_logs=str(tmp_path / "logs"),
    )  # fmt: skip
    cluster = Cluster(state)
    cluster.jobs.create(record)
    supervisor = Supervisor(cluster, record, loaded, SilentProgress(), str)
    now = [minutes_before(40)]
    supervisor.clock = lambda: now[0]
    for left in (40, 30, 25, 10, 3):
        now[0] = minutes_before(left)
        supervisor.warn_before_capacity_ends(ENV)
    stored = [event["text"] for event in cluster.jobs.get("j1").events]  # what status shows
    assert len(stored) == 2
    assert "in 30 minutes" in stored[0] and "in 10 minutes" in stored[1]
    assert cluster.jobs.get("j1").events[1]["time"] == round(minutes_before(10), 3)
    log = (tmp_path / "logs" / EVENTS_LOG).read_text().splitlines()
    assert len(log) == 2 and log[1].endswith(stored[1])
    supervisor.warn_before_capacity_ends({})  # no end recorded: nothing said
    assert len(cluster.jobs.get("j1").events) == 2
