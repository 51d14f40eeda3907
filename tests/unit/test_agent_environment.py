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
