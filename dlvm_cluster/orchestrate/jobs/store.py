"""The job records of the state dir (jobs/<id>.json), the cancel requests beside them, and
the supervisor process each job has: what `launch`, `cancel`, `status`, `scale`, `down` and
the supervisor itself read and write."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import UsageError
from dlvm_cluster.state import ClusterState, private_dir

SUPERVISOR_EXIT_WAIT = 120.0  # seconds `cancel` lets a supervisor finish the step it is in


@dataclass
class JobRecord:
    """What the state dir keeps of a job (jobs/<id>.json)."""

    id: str
    cluster: str
    framework: str
    command: str
    workdir: str
    nodes: list[str]
    port: int
    started: float
    state: str = "running"  # running | succeeded | failed | cancelled | recovering
    ended: float | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    remote_log: str = ""
    local_logs: str = ""
    detached: bool = False
    restarts: int = 0  # relaunches, whatever the cause (a rank's error or a lost node)
    recoveries: int = 0  # of which after replacing lost nodes
    events: list[dict[str, Any]] = field(default_factory=list)  # {"time", "text"}
    supervisor: str = ""  # the supervising process, as process_identity() names it

    @property
    def active(self) -> bool:
        return self.state in ("running", "recovering")


def _jobs_dir(state: ClusterState) -> Path:
    return state.root / "jobs"


def job_spec_path(state: ClusterState, job_id: str) -> Path:
    """The spec a job was launched with (a detached supervisor relaunches from it)."""
    return private_dir(_jobs_dir(state)) / f"{job_id}.spec"


def _cancel_flag(state: ClusterState, job_id: str) -> Path:
    return _jobs_dir(state) / f"{job_id}.cancel"


def request_cancel(state: ClusterState, job_id: str) -> None:
    """Tell the job's supervisor, wherever it is in its loop, to stop and not relaunch."""
    private_dir(_jobs_dir(state))
    _cancel_flag(state, job_id).touch(mode=0o600)


def cancel_requested(state: ClusterState, job_id: str) -> bool:
    return _cancel_flag(state, job_id).exists()


def process_identity(pid: int) -> str:
    """`PID:START` (start time in clock ticks since boot): a pid reused by another process
    later does not match. '' when no such process runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] == "Z" else f"{pid}:{fields[19]}"


def supervisor_alive(record: JobRecord) -> bool:
    pid = record.supervisor.partition(":")[0]
    return pid.isdigit() and process_identity(int(pid)) == record.supervisor


def save_job(state: ClusterState, record: JobRecord) -> None:
    directory = private_dir(_jobs_dir(state))
    state.write_json(directory / f"{record.id}.json", asdict(record))


def list_jobs(state: ClusterState) -> list[JobRecord]:
    directory = _jobs_dir(state)
    if not directory.exists():
        return []
    records = [JobRecord(**state.read_json(path)) for path in sorted(directory.glob("*.json"))]
    return sorted(records, key=lambda record: record.started)


def find_job(state: ClusterState, job_id: str | None) -> JobRecord:
    records = list_jobs(state)
    if not records:
        raise UsageError(f"cluster {state.name!r} has no jobs", hint="start one with `dlvm launch`")
    if job_id is None:
        return records[-1]
    for record in records:
        if record.id == job_id:
            return record
    raise UsageError(
        f"no job {job_id!r} on cluster {state.name!r}",
        hint="jobs: " + ", ".join(r.id for r in records[-5:]),
    )


def wait_for_supervisor(record: JobRecord, wait: float = SUPERVISOR_EXIT_WAIT) -> None:
    """Wait for the job's supervisor (told to stop by request_cancel) to exit; SIGTERM it
    after `wait` seconds (it then stops the job as on Ctrl-C), SIGKILL after as long again.
    Never this process itself."""
    if record.supervisor.partition(":")[0] == str(os.getpid()):
        return
    escalation = [signal.SIGTERM, signal.SIGKILL]
    deadline = time.monotonic() + wait
    while supervisor_alive(record):
        if time.monotonic() >= deadline:
            if not escalation:
                return
            with contextlib.suppress(OSError):
                os.kill(int(record.supervisor.partition(":")[0]), escalation.pop(0))
            deadline = time.monotonic() + wait
        time.sleep(0.2)


def stop_supervisors(state: ClusterState) -> None:
    """For `down`: every job's supervisor stops before the nodes go."""
    for record in list_jobs(state):
        if supervisor_alive(record):
            request_cancel(state, record.id)
            wait_for_supervisor(record)
