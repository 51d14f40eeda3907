"""Scaling a live local cluster: the node set follows, removed nodes leave nothing behind,
new nodes get setup once, and a scale killed half-way converges when run again."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from harness import Cli, unique_name, wait_until
from system import mounts_mentioning, namespaces, processes_mentioning


def _spec(folder: Path, name: str, count: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: {count}}}\n"
        "setup: echo once >> ~/setup-runs\n"
    )
    return path


def _hostnames(cli: Cli, name: str) -> list[str]:
    result = cli.run("exec", name, "--", "hostname", check=True)
    return sorted(line.split("] ")[1] for line in result.stdout.splitlines())


def _node_dirs(cli: Cli, name: str) -> list[str]:
    nodes = cli.home / "clusters" / name / "nodes"
    return sorted(p.name for p in nodes.iterdir() if p.is_dir()) if nodes.exists() else []


def test_scale_up_then_down_follows_exactly(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("sc")
    spec = _spec(tmp_path, name, 2)
    cli.run("up", str(spec), check=True)
    try:
        grown = cli.run("scale", name, "4", "--yes", check=True)
        assert "+ node-2" in grown.stdout and "+ node-3" in grown.stdout
        assert _hostnames(cli, name) == ["node-0", "node-1", "node-2", "node-3"]
        runs = cli.run("exec", name, "--", "wc -l < ~/setup-runs", check=True)
        assert sorted(runs.stdout.split()) == ["1"] * 4 + [f"[node-{r}]" for r in range(4)]
        # Old nodes reach the new ones by name with pinned keys, and back.
        mesh = cli.run("exec", name, "--", "ssh node-3 hostname; ssh node-0 hostname", check=True)
        answers = sorted(line.split("] ")[1] for line in mesh.stdout.splitlines())
        assert answers == ["node-0"] * 4 + ["node-3"] * 4
        assert cli.status(name)["nodes"][3]["reachable"]  # type: ignore[index]

        shrunk = cli.run("scale", name, "1", "--yes", check=True)
        assert "- node-3" in shrunk.stdout
        assert _hostnames(cli, name) == ["node-0"]
        assert len(cli.status(name)["nodes"]) == 1  # type: ignore[arg-type]
        assert len(namespaces(name)) == 1
        assert _node_dirs(cli, name) == ["node-0"]
        env = cli.run("exec", name, "--", "echo $DLVM_NUM_NODES $DLVM_NODE_IPS", check=True)
        assert env.stdout.split()[1:] == ["1", cli.status(name)["nodes"][0]["ip"]]  # type: ignore[index]

        refused = cli.run("scale", name, "0", "--yes")
        assert refused.returncode == 2 and "head" in refused.stderr
        too_many = cli.run("scale", name, "65", "--yes")
        assert too_many.returncode == 2 and "64" in too_many.stderr
        # The file still says 2: up asks before undoing the scale, and converges with --yes.
        asked = cli.run("up", str(spec))
        assert asked.returncode == 2 and "was scaled to 1" in asked.stderr
        cli.run("up", str(spec), "--yes", check=True)
        assert _hostnames(cli, name) == ["node-0", "node-1"]
    finally:
        cli.run("down", name, "--yes", check=True)
    assert namespaces(name) == []


def test_killed_scale_converges_when_run_again(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("sk")
    cli.run("up", str(_spec(tmp_path, name, 1)), check=True)
    try:
        with cli.background("scale", name, "5", "--yes") as process:
            # Kill it as soon as Terraform has started making nodes.
            wait_until(
                lambda: len(namespaces(name)) >= 2, 60, interval=0.05, message="no node was made"
            )
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        again = cli.run("scale", name, "5", "--yes", timeout=300)
        assert again.returncode == 0, again.stderr
        assert _hostnames(cli, name) == [f"node-{r}" for r in range(5)]
        assert len(namespaces(name)) == 5
        state = json.loads((cli.home / "clusters" / name / "inventory.json").read_text())
        assert len(state["nodes"]) == 5
    finally:
        cli.run("down", name, "--yes", check=True)
    assert namespaces(name) == []
    assert processes_mentioning(f"/clusters/{name}/") == []
    assert mounts_mentioning(f"/clusters/{name}/") == []
