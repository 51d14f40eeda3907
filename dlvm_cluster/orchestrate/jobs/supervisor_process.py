"""The detached supervisor of `launch --detach`: a process of the job's own that runs the
same loop as the foreground `dlvm launch` (orchestrate/jobs/supervise.py) with no dlvm command
running: `python -m dlvm_cluster.orchestrate.jobs.supervisor_process CLUSTER JOB`. Its notes go to
the job's local supervisor.log; it is gone when the job ends, on `cancel` and on `down`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from dlvm_cluster import secret_env
from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Node
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.records import read_spec
from dlvm_cluster.orchestrate.jobs import queue
from dlvm_cluster.orchestrate.jobs.follow import JobCancelled
from dlvm_cluster.orchestrate.jobs.store import JobRecord, process_identity
from dlvm_cluster.orchestrate.jobs.supervise import Supervisor
from dlvm_cluster.progress import TerraformEvent
from dlvm_cluster.remote.agent_process import minimal_environment
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import SUPERVISOR_LOG, ClusterState, private_dir


class LogProgress:
    """Progress of the detached supervisor: stages and notes to its log (the nodes' output
    goes to the job's local logs)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def stage(self, text: str) -> None:
        self._write(text)

    def note(self, text: str) -> None:
        self._write(text)

    def terraform(self, event: TerraformEvent) -> None:
        if event.kind in ("errored", "summary"):
            self._write(f"terraform: {event.address} {event.message}".strip())

    def line(self, node: Node, stream: str, text: str) -> None:
        return None

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        return None


# Beyond the agent's: what a replacement needs as `up` does (Terraform, the cloud's
# credentials and API access) and a development checkout needs to import dlvm.
SUPERVISOR_ENV_NAMES = frozenset(
    {"VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"}
    | {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"}
)
SUPERVISOR_ENV_PREFIXES = ("DLVM_", "GOOGLE_", "CLOUDSDK_", "AWS_", "TF_")


def supervisor_environment(environ: Mapping[str, str], loaded: LoadedSpec | None) -> dict[str, str]:
    """The detached supervisor's whole environment. It lives as long as the job (days), and
    a long-lived process's environment is readable in /proc/PID/environ: it keeps what the
    agent keeps, the variables the job's `from_env` secrets name (a relaunch installs them
    again), dlvm's own settings, the cloud's credentials and Terraform's settings, proxies
    and CA files, and VIRTUAL_ENV; not the rest of the user's shell (other tokens)."""
    secrets = loaded.spec.secret_env().values() if loaded is not None else ()
    names = SUPERVISOR_ENV_NAMES | {item.from_env for item in secrets if item.from_env}
    return minimal_environment(environ, names=names, prefixes=SUPERVISOR_ENV_PREFIXES)


def spawn(state: ClusterState, record: JobRecord) -> str:
    """Start the job's supervisor in the background with a minimal environment
    (supervisor_environment); its process identity."""
    folder = private_dir(Path(record.local_logs))
    log = os.open(folder / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    env = supervisor_environment(os.environ, read_spec(state, state.job_spec(record.id)))
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlvm_cluster.orchestrate.jobs.supervisor_process",
                state.name,
                record.id,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(log)
    return process_identity(process.pid) or f"{process.pid}:?"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    """The detached supervisor, given CLUSTER and JOB."""
    cluster, job_id = argv
    signal.signal(signal.SIGTERM, _terminate)
    context = Cluster.named(cluster)
    record = context.jobs.get(job_id)
    progress = LogProgress(Path(record.local_logs) / SUPERVISOR_LOG)
    loaded = read_spec(context.state, context.state.job_spec(job_id))
    if loaded is None:
        progress.note(f"no spec recorded for job {job_id}: not supervised")
        return 1
    record.supervisor = process_identity(os.getpid())
    redact = secret_env.redactor(secret_env.resolve(loaded.spec, strict=False))
    supervisor = Supervisor(context, record, loaded, progress, redact)
    code = 1
    try:
        supervisor.save()
        supervisor.run()
        progress.note(f"job {job_id}: succeeded")
        code = 0
    except (DlvmError, JobCancelled) as exc:
        progress.note(f"job {job_id}: {exc}")
    except KeyboardInterrupt:
        progress.note(f"job {job_id}: stopped by a signal; cancelled")
        context.close()
        return 1
    except Exception as exc:  # never leave the record "running" or "recovering"
        why = f"{type(exc).__name__}: {exc}"[:500]
        if record.active:
            supervisor.broke(why)
        progress.note(f"job {job_id}: failed: {why}")
    try:
        # The cluster is free: the next queued job, if any, starts with a supervisor of its own.
        queue.start_next(context, progress, spawn)
    finally:
        context.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
