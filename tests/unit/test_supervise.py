"""The pieces of job supervision that need no cluster: a restarted job's log (appended, and
followed from where the current run begins), the supervisor's identity surviving pid reuse,
and the hang timeout's test override."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import wait_until

from dlvm_cluster.orchestrate.jobs.follow import HANG_SECONDS_ENV, hang_seconds
from dlvm_cluster.orchestrate.jobs.store import (
    JobRecord,
    process_identity,
    supervisor_alive,
    wait_for_supervisor,
)
from dlvm_cluster.remote import jobcontrol


def _sh(home: Path, script: str) -> str:
    """Run job-control shell text as a node's login shell would, with `home` as ~."""
    done = subprocess.run(
        ["sh", "-c", script],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def _wait_for_exit(home: Path, job_id: str) -> None:
    _sh(
        home,
        f"for i in $(seq 100); do {jobcontrol.probe('c', [job_id])} | grep -q exit && "
        "break; sleep 0.05; done",
    )


def test_a_restarted_job_appends_to_its_log_and_follow_shows_the_current_run(
    tmp_path: Path,
) -> None:
    for run in ("first-run", "second-run"):
        started = _sh(tmp_path, jobcontrol.start("c", "j1", f"echo {run}", {}, str(tmp_path)))
        assert started.startswith("started ")
        _wait_for_exit(tmp_path, "j1")
    log = _sh(tmp_path, jobcontrol.show_log("c", "j1"))
    assert log.splitlines() == ["first-run", "second-run"]  # both runs kept
    followed = _sh(tmp_path, jobcontrol.follow("c", "j1"))
    assert followed.splitlines() == ["second-run"]  # the run being supervised, alone


def test_the_supervisor_is_alive_only_while_the_same_process_runs() -> None:
    me = process_identity(os.getpid())
    assert me.startswith(f"{os.getpid()}:")
    record = JobRecord("j", "c", "none", "true", "~", [], 1, 0.0, supervisor=me)
    assert supervisor_alive(record)
    pid, _, started = me.partition(":")
    reused = JobRecord("j", "c", "none", "true", "~", [], 1, 0.0, supervisor=f"{pid}:1{started}")
    assert not supervisor_alive(reused)  # the same pid, started at another time: not ours
    assert not supervisor_alive(JobRecord("j", "c", "none", "true", "~", [], 1, 0.0))


def test_hang_timeout_in_minutes_with_a_seconds_override_for_tests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HANG_SECONDS_ENV, raising=False)
    assert hang_seconds(30) == 1800.0
    assert hang_seconds(None) is None
    monkeypatch.setenv(HANG_SECONDS_ENV, "3")
    assert hang_seconds(30) == 3.0


@pytest.mark.parametrize(
    "command",
    [["sleep", "60"], ["sh", "-c", 'trap "" TERM; exec sleep 60']],
    ids=["stops-on-sigterm", "ignores-sigterm"],
)
def test_cancel_ends_a_supervisor_that_does_not_exit_by_itself(command: list[str]) -> None:
    stuck = subprocess.Popen(command)
    try:
        identity = wait_until(lambda: process_identity(stuck.pid), 5)
        record = JobRecord("j", "c", "none", "true", "~", [], 1, 0.0, supervisor=identity)
        wait_for_supervisor(record, wait=0.2)  # SIGTERM, then SIGKILL
        assert not supervisor_alive(record)
    finally:
        stuck.kill()
        stuck.wait()


def test_a_lost_node_of_a_kind_that_cannot_replace_fails_the_job_in_its_words() -> None:
    """ssh machines cannot be made again: the job fails with the kind's refusal at once,
    instead of asking the provider to replace them, try after try."""
    from dlvm_cluster.orchestrate.jobs import policy
    from dlvm_cluster.providers import lacking
    from dlvm_cluster.providers.kind import Feature

    def decided(kind: str) -> policy.Action:
        refusal = lacking(kind, Feature.REPLACE)
        seen = policy.RunSeen(
            powered_off="",
            lost={"node-1": "unreachable over SSH"},
            survivors_running=False,
            on_node_loss="replace",
            restarts=0,
            max_restarts_on_error=0,
            replace_refusal="" if refusal is None else refusal.message,
        )
        return policy.decide(seen)

    failed = decided("ssh")
    assert isinstance(failed, policy.Fail)
    assert failed.why.startswith("node-1 cannot be replaced: the ssh provider")
    assert decided("local") == policy.ReplaceAndRestart(("node-1",))


@pytest.mark.parametrize(
    ("probed", "code"),
    [
        ("exit 0", 0),
        ("exit 137", 137),
        ("exit x", None),  # what a node wrote in the job's exit file: anything
        ("exit", None),
        ("exit ", None),
        ("exit 99999999999999999999", None),
        ("exit 256", None),
        ("exit -1", None),
        ("exit 1 2", None),
        ("exit \u0661", None),  # an Arabic-Indic digit: int() would take it
        ("running", None),
        ("gone", None),
    ],
)
def test_a_jobs_exit_status_is_read_strictly(probed: str, code: int | None) -> None:
    """`status` read `int(line.split()[1])` from each node's `ID exit N`: a node's `exit`
    file holding `x` (or nothing) crashed it."""
    from dlvm_cluster.orchestrate.jobs.verbs import exit_code

    assert exit_code(probed) == code
