"""The job records of the state dir (jobs/<id>.json), the cancel requests beside them, and
the supervisor process each job has: what `launch`, `cancel`, `status`, `scale`, `down` and
the supervisor itself read and write."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import UsageError
from dlvm_cluster.state import ClusterState, private_dir

SUPERVISOR_EXIT_WAIT = 120.0  # seconds `cancel` lets a supervisor finish the step it is in
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # launch.plan.new_job_id makes these


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


class JobStore:
    """The cluster's job records, one file each (jobs/<id>.json): read one at a time, and
    changed only under that record's lock (`update`), so that two writers (`scale` and the
    supervisor, `cancel` and the supervisor) never lose each other's change."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def _path(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):  # an id from the command line names no other file
            raise UsageError(
                f"no job {job_id!r} on cluster {self.state.name!r}",
                hint="`dlvm status` lists the cluster's jobs",
            )
        return self.state.job_record(job_id)

    def create(self, record: JobRecord) -> None:
        """Record a new job."""
        private_dir(self.state.jobs_dir)
        self.state.write_json(self._path(record.id), asdict(record))

    def get(self, job_id: str) -> JobRecord:
        """The job's record as it is now (one file read)."""
        data = self.state.read_json(self._path(job_id))
        if not data:
            raise UsageError(
                f"no job {job_id!r} on cluster {self.state.name!r}",
                hint="jobs: " + ", ".join(r.id for r in self.all()[-5:]),
            )
        return JobRecord(**data)

    def all(self) -> list[JobRecord]:
        """Every job, oldest first."""
        directory = self.state.jobs_dir
        if not directory.exists():
            return []
        records = [
            JobRecord(**self.state.read_json(path)) for path in sorted(directory.glob("*.json"))
        ]
        return sorted(records, key=lambda record: record.started)

    def find(self, job_id: str | None) -> JobRecord:
        """The job named on the command line, or the latest one."""
        if job_id is not None:
            return self.get(job_id)
        records = self.all()
        if not records:
            raise UsageError(
                f"cluster {self.state.name!r} has no jobs", hint="start one with `dlvm launch`"
            )
        return records[-1]

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        private_dir(self.state.jobs_dir)
        fd = os.open(self.state.job_lock(job_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Read the record, apply `change` to it and write it back, all under the record's
        lock: each writer changes only its own fields of the record as it is now. The
        record as written."""
        with self._locked(job_id):
            record = self.get(job_id)
            change(record)
            self.state.write_json(self._path(job_id), asdict(record))
            return record

    def request_cancel(self, job_id: str) -> None:
        """Tell the job's supervisor, wherever it is in its loop, to stop and not relaunch."""
        private_dir(self.state.jobs_dir)
        self.state.job_cancel(job_id).touch(mode=0o600)

    def cancel_requested(self, job_id: str) -> bool:
        return self.state.job_cancel(job_id).exists()

    def spec_path(self, job_id: str) -> Path:
        """The spec a job was launched with (a detached supervisor relaunches from it)."""
        private_dir(self.state.jobs_dir)
        return self.state.job_spec(job_id)

    def stop_supervisors(self) -> None:
        """For `down`: every job's supervisor stops before the nodes go."""
        for record in self.all():
            if supervisor_alive(record):
                self.request_cancel(record.id)
                wait_for_supervisor(record)


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
