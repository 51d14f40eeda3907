"""The agent lives for minutes with whatever environment it was started with, readable in
/proc/PID/environ: it gets a minimal one, never a secret from the user's shell. A real agent
whose only node cannot be reached (no cluster, no root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_agent, unreachable_cluster

from dlvm_cluster.remote import agent_process
from dlvm_cluster.state import ClusterState

PLANTED = "987654321-planted-secret"


@pytest.fixture
def agent_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    monkeypatch.setenv("DLVM_AGENT_IDLE", "30")
    monkeypatch.setenv("MY_API_TOKEN", PLANTED)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)
    monkeypatch.setenv("DLVM_TERRAFORM", "/nonexistent/terraform")
    monkeypatch.setenv("LC_TIME", "C")
    # What gcloud's IAP tunnel (a private node's proxy command, run by the agent) reads.
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/home/u/.config/gcloud-work")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    state = unreachable_cluster(ClusterState.for_name("agenv"))
    pid = start_agent(state)
    try:
        yield pid
    finally:
        agent_process.stop(state.root)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_the_agent_holds_no_variable_it_does_not_need(agent_pid: int, tmp_path: Path) -> None:
    environ = environ_of(agent_pid)
    assert PLANTED not in Path(f"/proc/{agent_pid}/environ").read_text()
    named = {name for name in environ if not name.startswith(agent_process.AGENT_ENV_PREFIXES)}
    assert named <= agent_process.AGENT_ENV_NAMES | {"PYTHONPATH"}
    assert environ["CLOUDSDK_CONFIG"] == "/home/u/.config/gcloud-work"
    assert environ["HTTPS_PROXY"] == "http://proxy.internal:3128"
    assert environ["DLVM_HOME"] == str(tmp_path)
    assert environ["DLVM_AGENT_IDLE"] == "30" and environ["LC_TIME"] == "C"
    assert environ["PATH"] == os.environ["PATH"]
    package_root = str(Path(agent_process.__file__).parents[2])
    assert environ["PYTHONPATH"].split(os.pathsep)[0] == package_root


def test_the_detached_supervisor_gets_what_a_relaunch_needs_and_no_other_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor lives as long as its job (days): the agent's minimal environment, plus
    the job's from_env secrets, dlvm's settings and the cloud's credentials, not the rest of
    the user's shell."""
    import subprocess
    from dataclasses import dataclass

    from dlvm_cluster.orchestrate.cluster import records
    from dlvm_cluster.orchestrate.jobs import supervisor_process
    from dlvm_cluster.orchestrate.jobs.store import JobRecord, JobStore
    from dlvm_cluster.providers import load_spec_text

    planted = {
        "MY_API_TOKEN": PLANTED,
        "GITHUB_TOKEN": PLANTED,
        "OTHER_CLOUD_TOKEN": PLANTED,
    }
    kept = {
        "JOB_TOKEN": "the job's from_env secret",
        "DLVM_TERRAFORM": "/opt/terraform",
        "DLVM_HOME": str(tmp_path),
        "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
        "CLOUDSDK_CONFIG": "/home/u/.config/gcloud",
        "TF_CLI_CONFIG_FILE": "/home/u/.terraformrc",
        "VIRTUAL_ENV": "/src/dlvm/.venv",
        "HTTPS_PROXY": "http://proxy:3128",
        "PATH": os.environ["PATH"],
        "LC_ALL": "C.UTF-8",
    }
    for name, value in {**planted, **kept}.items():
        monkeypatch.setenv(name, value)
    state = ClusterState.for_name("supenv")
    state.create()
    loaded = load_spec_text(
        "name: supenv\nprovider: {kind: local}\nnodes: {count: 1}\n"
        "env:\n  TOKEN: {from_env: JOB_TOKEN}\njob: {framework: none, command: train}\n",
        tmp_path / "supenv.yaml",
    )
    record = JobRecord("j1", "supenv", "none", "train", "~", ["node-0"], 1, 0.0)
    record.local_logs = str(tmp_path / "logs")
    records.save_spec(state, JobStore(state).spec_path(record.id), loaded)

    @dataclass
    class Started:
        pid: int = os.getpid()

    seen: dict[str, str] = {}

    def popen(*args: object, env: dict[str, str], **kwargs: object) -> Started:
        seen.update(env)
        return Started()

    monkeypatch.setattr(subprocess, "Popen", popen)
    supervisor_process.spawn(state, record)
    assert not set(planted) & set(seen), seen
    for name, value in kept.items():
        assert seen[name] == value, name
    assert seen["PYTHONPATH"].split(os.pathsep)[0] == str(Path(agent_process.__file__).parents[2])
