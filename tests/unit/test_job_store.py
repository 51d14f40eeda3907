"""The job store (orchestrate/jobs/store.py): one record read per look, and changes made
under the record's lock, so that two writers (scale and the supervisor) lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from dlvm_cluster.errors import UsageError
from dlvm_cluster.orchestrate.jobs.store import JobRecord, JobStore
from dlvm_cluster.state import ClusterState

WRITES = 40  # changes made by each of two processes at once


def _record(job_id: str, started: float = 1.0) -> JobRecord:
    return JobRecord(job_id, "c", "none", "true", "~", ["node-0", "node-1"], 20000, started)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    state = ClusterState("c", tmp_path / "c")
    state.create()
    return JobStore(state)


def _add_events(root: str, writer: str) -> None:
    """A writer that, like the supervisor, appends to the record's events one at a time."""
    jobs = JobStore(ClusterState("c", Path(root)))
    for n in range(WRITES):
        jobs.update("j1", lambda r, n=n: r.events.append({"time": n, "text": writer}))


def _add_nodes(root: str) -> None:
    """A writer that, like `scale`, changes only the record's nodes."""
    jobs = JobStore(ClusterState("c", Path(root)))
    for n in range(WRITES):
        jobs.update("j1", lambda r, n=n: r.nodes.append(f"node-{n + 2}"))


def test_two_writers_at_once_lose_nothing(store: JobStore) -> None:
    store.create(_record("j1"))
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_add_events, args=(str(store.state.root), "supervisor")),
        context.Process(target=_add_nodes, args=(str(store.state.root),)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    record = store.get("j1")
    assert len(record.events) == WRITES  # every event the supervisor wrote is there
    assert len(record.nodes) == 2 + WRITES  # and so is every node scale added


def test_a_change_to_a_stale_copy_would_have_lost_the_other_write(store: JobStore) -> None:
    """Why `update` exists: writing back a copy read before another writer's change loses
    that change (what a whole-record save did)."""
    store.create(_record("j1"))
    stale = store.get("j1")
    store.update("j1", lambda r: r.nodes.append("node-2"))  # scale
    stale.state = "recovering"  # the supervisor, from its old copy
    store.update("j1", lambda r: setattr(r, "state", stale.state))
    record = store.get("j1")
    assert record.nodes == ["node-0", "node-1", "node-2"] and record.state == "recovering"


def test_get_reads_one_record_and_find_gives_the_latest(store: JobStore) -> None:
    store.create(_record("20260101-000000-aaaa", started=1.0))
    store.create(_record("20260101-000001-bbbb", started=2.0))
    assert store.get("20260101-000000-aaaa").started == 1.0
    assert store.find(None).id == "20260101-000001-bbbb"
    assert [r.id for r in store.all()] == ["20260101-000000-aaaa", "20260101-000001-bbbb"]


@pytest.mark.parametrize("job_id", ["../../spec", "x/y", "", ".hidden", "a" * 65])
def test_a_job_id_names_no_other_file(store: JobStore, job_id: str) -> None:
    store.create(_record("j1"))
    with pytest.raises(UsageError, match="no job"):
        store.get(job_id)


def test_an_unknown_job_is_a_usage_error_naming_the_known(store: JobStore) -> None:
    with pytest.raises(UsageError, match="has no jobs"):
        store.find(None)
    store.create(_record("j1"))
    with pytest.raises(UsageError, match="no job 'j2'") as raised:
        store.get("j2")
    assert raised.value.hint == "jobs: j1"
