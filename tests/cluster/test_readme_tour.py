"""The README's 60-second tour, run in order as a new user would, on the local provider;
each command's output is checked for the shape the README promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Cli

pytestmark = pytest.mark.training

# What each tour command must print (stdout), by its first words.
SHAPES: dict[str, str] = {
    "dlvm up examples/local.yaml": r"cluster demo is (up: 3 node\(s\)|up to date)",
    "dlvm status demo --json": r'"cluster": "demo"',
    "dlvm status demo": r"node-2 .*ok",
    "dlvm top demo --once": r"cluster demo  3/3 node\(s\) answering(.*\n)*.*node-2",
    "dlvm exec demo -- 'hostname": r"(?s)(?=.*\[node-0\] node-0\n)(?=.*\[node-2\] node-2\n)",
    "dlvm exec demo --nodes": r"\A(\[node-(0|2)\] (0|2) of 3\n){2}\Z",
    "dlvm check demo": r"(?s)all_reduce \(gloo\): bus bandwidth .*all 3 node\(s\) passed",
    "dlvm launch demo --detach": r"job \S+ started on 3 node\(s\), 3 process\(es\)",
    "dlvm launch demo": r"\[node-0\] done steps=200 world_size=3",
    "dlvm logs demo": r"job \S+ \(running\) on node-0, node-1, node-2",
    "dlvm cancel demo": r"no process of it is left on 3 node\(s\)",
    "dlvm sync demo": r"synced 3 node\(s\): \d+ file\(s\) sent",
    "dlvm ssh-config demo": r"",
    "ssh -F demo.ssh demo-node-1 hostname": r"\Anode-1\n\Z",
    "dlvm scale demo 4 --yes": r"cluster demo has 4 node\(s\)",
    # After `scale demo 4`, the file's 3 nodes mean node-3 would go.
    "dlvm plan examples/local.yaml": r'\(exists\): \d+ to add.*\n(.*\n)*  - \S+\["node-3"\]',
    "dlvm render examples/local.yaml -o tf": r"wrote the local module",
    "dlvm down demo --yes": r"cluster demo is gone",
}


def tour_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## A 60-second tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("source "):
            commands.append(command)
    return commands


def test_every_tour_command_has_a_documented_shape() -> None:
    for command in tour_commands():
        assert any(command.startswith(prefix) for prefix in SHAPES), command


def test_the_tour_runs_in_order(cli: Cli, tmp_path: Path) -> None:
    env = {
        **cli.env(),
        "DLVM_HOME": str(tmp_path / "home"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    (tmp_path / "examples").symlink_to(REPO / "examples")
    try:
        for command in tour_commands():
            result = subprocess.run(
                command,
                shell=True,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            prefix = max((p for p in SHAPES if command.startswith(p)), key=len)
            shown = result.stdout + (result.stderr if command.startswith("dlvm logs") else "")
            assert re.search(SHAPES[prefix], shown), f"{command}:\n{shown}"
            assert "Traceback" not in result.stderr
        status = subprocess.run(
            ["dlvm", "status", "--json"], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(status.stdout) == []
        assert (tmp_path / "tf" / "terraform.tfvars.json").exists()
    finally:
        subprocess.run(["dlvm", "down", "demo", "--yes"], env=env, capture_output=True)
