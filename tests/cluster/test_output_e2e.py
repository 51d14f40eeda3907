"""Output for scripts and logs, on a real local cluster: `--json` prints exactly one JSON
document whose fields match what the cluster really is (checked against `status --json`,
the job records, the processes and namespaces left), and `--quiet` prints only the summary.

One 2-node cluster goes through every command in one test, as CI has two cores."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from harness import Cli, unique_name, write_unreachable_ssh_spec
from system import namespaces, processes_mentioning, sleep_marker, wait_for_processes

MARKER = sleep_marker(641)  # the detached job's process, found on the machine by this text
NODE_FIELDS = ("name", "rank", "ip", "port", "user")


def _spec(folder: Path, name: str, tag: str, job: str) -> Path:
    """The cluster file; `tag` names variants that differ only in their job."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    (data / "hello.txt").write_text("hello\n")
    path = folder / f"{name}-{tag}.yaml"
    path.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 2}\n"
        f"files:\n  - {{src: {data}, dst: ~/data}}\n"
        "setup: echo setup-out-$DLVM_NODE_RANK\n"
        f"job:\n  framework: none\n  command: {job}\n"
    )
    return path


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    """The command succeeded and its stdout is one JSON document and nothing else."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _only_summary(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    """--quiet: exit 0, one summary line on stdout, nothing at all on stderr."""
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(pattern + r"\n", result.stdout), result.stdout
    assert result.stderr == "", result.stderr


def _status_nodes(cli: Cli, name: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = cli.status(name)["nodes"]  # type: ignore[assignment]
    assert all(node["reachable"] for node in nodes), nodes
    assert all(node["state"] == "running" for node in nodes), nodes
    # provider_id of a local node: its network namespace, as the machine lists it.
    assert sorted(node["provider_id"] for node in nodes) == sorted(namespaces(name))
    return [{field: node[field] for field in NODE_FIELDS} for node in nodes]


def _status_job(cli: Cli, name: str, job_id: str) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = cli.status(name)["jobs"]  # type: ignore[assignment]
    return next(job for job in jobs if job["id"] == job_id)


def test_json_and_quiet_match_the_cluster(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("out")
    spec = _spec(tmp_path, name, "main", "echo hello-$DLVM_NODE_RANK")
    try:
        _check_up(cli, name, spec)
        _check_launch(cli, name, tmp_path, spec)
        _check_detach_and_cancel(cli, name, tmp_path)
        _check_scale(cli, name)
        _check_down_then_quiet_up_and_down(cli, name, spec)
    finally:
        if (cli.home / "clusters" / name).exists():
            cli.run("down", name, "--yes")
    assert processes_mentioning(MARKER) == []


def _check_up(cli: Cli, name: str, spec: Path) -> None:
    made = cli.run("up", str(spec), "--json")
    up = _json(made)
    assert (up["cluster"], up["changed"], up["provisioned"]) == (name, True, True)
    assert up["nodes"] == _status_nodes(cli, name)
    assert [node["name"] for node in up["nodes"]] == ["node-0", "node-1"]
    assert len({node["ip"] for node in up["nodes"]}) == 2
    assert up["files_sent"] == 2  # one file to each node
    assert up["setup"] == {"ran": ["node-0", "node-1"], "unchanged": [], "horovod": []}
    assert up["seconds"] > 0
    # The setup's output is not lost: it went to stderr, the progress did not.
    assert "[node-1] setup-out-1" in made.stderr
    assert "==>" not in made.stderr

    again = _json(cli.run("up", str(spec), "--json"))
    assert (again["changed"], again["provisioned"], again["files_sent"]) == (False, False, 0)
    assert again["setup"] == {"ran": [], "unchanged": ["node-0", "node-1"], "horovod": []}
    assert again["nodes"] == up["nodes"]

    rerun = cli.run("up", str(spec), "-q", "--rerun-setup")
    _only_summary(rerun, rf"cluster {name} is up: 2 node\(s\), setup ran on 2 in [0-9.]+s")


def _check_launch(cli: Cli, name: str, folder: Path, spec: Path) -> None:
    ran = cli.run("launch", str(spec), "--json")
    record = _json(ran)
    assert record == _status_job(cli, name, record["id"])
    assert (record["cluster"], record["state"], record["framework"]) == (name, "succeeded", "none")
    assert record["nodes"] == ["node-0", "node-1"]
    assert record["exit_codes"] == {"node-0": 0, "node-1": 0}
    assert record["ended"] >= record["started"] and record["detached"] is False
    assert "[node-1] hello-1" in ran.stderr

    quiet = cli.run("launch", str(spec), "-q")
    _only_summary(quiet, r"job \S+ succeeded on 2 node\(s\), 2 process\(es\) in [0-9.]+s")

    failing = _spec(folder, name, "fail", "'[ $DLVM_NODE_RANK = 1 ] && exit 3; echo fine'")
    failed = cli.run("launch", str(failing), "--json")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "failed on node-1 (exit 3)" in failed.stderr


def _check_detach_and_cancel(cli: Cli, name: str, folder: Path) -> None:
    long = _spec(folder, name, "long", f"'{MARKER}'")
    record = _json(cli.run("launch", str(long), "--detach", "--json"))
    assert (record["state"], record["detached"], record["ended"]) == ("running", True, None)
    assert record["nodes"] == ["node-0", "node-1"]
    wait_for_processes(MARKER, 2, timeout=30)  # one per node, still running
    assert record == _status_job(cli, name, record["id"])

    cancelled = _json(cli.run("cancel", name, record["id"], "--json"))
    assert cancelled == {
        "cluster": name,
        "id": record["id"],
        "state": "cancelled",
        "stopped": True,
        "nodes": [
            {"name": "node-0", "stopped": True, "problem": None},
            {"name": "node-1", "stopped": True, "problem": None},
        ],
    }
    assert processes_mentioning(MARKER) == []
    assert _status_job(cli, name, record["id"])["state"] == "cancelled"

    quiet = cli.run("launch", str(long), "--detach", "-q")
    _only_summary(quiet, r"job \S+ started on 2 node\(s\), 2 process\(es\)")
    cli.run("cancel", name, check=True)
    assert processes_mentioning(MARKER) == []


def _check_scale(cli: Cli, name: str) -> None:
    wrong = cli.run("scale", name, "0", "--yes", "--json")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert "never removed" in wrong.stderr

    shrunk = _json(cli.run("scale", name, "1", "--yes", "--json"))
    assert {
        k: shrunk[k] for k in ("cluster", "changed", "before", "after", "added", "removed")
    } == {
        "cluster": name,
        "changed": True,
        "before": 2,
        "after": 1,
        "added": [],
        "removed": ["node-1"],
    }
    assert shrunk["nodes"] == _status_nodes(cli, name)
    assert len(shrunk["nodes"]) == 1 and len(namespaces(name)) == 1
    assert shrunk["seconds"] > 0

    grown = cli.run("scale", name, "2", "--yes", "-q")
    _only_summary(grown, rf"cluster {name} has 2 node\(s\) \([0-9.]+s\)")
    assert len(_status_nodes(cli, name)) == 2

    same = _json(cli.run("scale", name, "2", "--yes", "--json"))
    assert (same["changed"], same["before"], same["after"]) == (False, 2, 2)
    assert (same["added"], same["removed"]) == ([], [])
    assert same["nodes"] == _status_nodes(cli, name)


def _check_down_then_quiet_up_and_down(cli: Cli, name: str, spec: Path) -> None:
    gone = _json(cli.run("down", name, "--yes", "--json"))
    assert gone["cluster"] == name and gone["seconds"] > 0
    assert namespaces(name) == [] and not (cli.home / "clusters" / name).exists()

    # Made again from nothing: Terraform, readiness and setup print nothing with --quiet.
    made = cli.run("up", str(spec), "-q")
    _only_summary(
        made, rf"cluster {name} is up: 2 node\(s\), 2 file\(s\) pushed, setup ran on 2 in [0-9.]+s"
    )
    assert len(namespaces(name)) == 2
    _only_summary(cli.run("down", name, "--yes", "-q"), rf"cluster {name} is gone \([0-9.]+s\)")
    assert namespaces(name) == []


def _dlvm(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run(*args, timeout=60)


def test_doctor_json_says_what_the_text_says(cli: Cli) -> None:
    text = _dlvm(cli, "doctor")
    result = _dlvm(cli, "doctor", "--json")
    data = json.loads(result.stdout)
    assert result.returncode == text.returncode
    assert data["provider"] == "local"
    shown = [line for line in text.stdout.splitlines() if not line.startswith(" ")]
    assert len(shown) == len(data["checks"])
    for line, check in zip(shown, data["checks"], strict=True):
        assert line.startswith("ok" if check["ok"] else "problem")
        assert f" {check['name']}: " in line
        assert (check["problem"] is None) == check["ok"] == (check["fix"] is None)
    assert data["ok"] == all(check["ok"] for check in data["checks"]) == (result.returncode == 0)


def test_doctor_json_names_the_unreachable_host_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    spec = write_unreachable_ssh_spec(tmp_path)
    result = _dlvm(cli, "doctor", str(spec), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert (data["provider"], data["ok"]) == ("ssh", False)
    checks = {check["name"]: check for check in data["checks"]}
    assert checks["identity file"] == {
        "name": "identity file",
        "ok": True,
        "detail": str(tmp_path / "key"),
        "problem": None,
        "fix": None,
    }
    host = checks["127.0.0.1:9"]
    assert host["ok"] is False and host["problem"] and host["detail"] is None
    assert host["fix"].startswith("check the address")
    assert "1 problem(s) found" in result.stderr
