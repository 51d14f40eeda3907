"""Adding a provider is one package and one registry line: a kind defined and registered only
in this file (its keys, its rule, its implementation) runs every verb on real nodes.

Its machines are the local provider's network namespaces (the implementation subclasses
`NamespaceNodes`, as a new cloud would start from its own API instead); everything else, the
cluster file's `box` keys, the rule, the dispatch, the feature checks, is the registry's.
The real `dlvm` runs in a subprocess that is this file (`python THIS_FILE ARGS`), which adds
the kind to the registry and then hands over to dlvm's own `main`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dlvm_cluster.inventory import Node
from dlvm_cluster.providers import registry
from dlvm_cluster.providers.kind import ProviderKind
from dlvm_cluster.providers.local import NamespaceNodes
from dlvm_cluster.spec.kinds import Problem, SpecKind
from dlvm_cluster.spec.model import ClusterSpec, Nodes, ProviderConfig

if TYPE_CHECKING:
    from harness import Cli


class BoxConfig(ProviderConfig):
    """`provider: {kind: box, label: ...}`"""

    kind: Literal["box"]
    label: str = "box"


class BoxNodes(Nodes):
    flavour: str = "plain"


def box_rules(spec: ClusterSpec) -> list[Problem]:
    assert isinstance(spec.nodes, BoxNodes)
    if spec.nodes.flavour == "solo" and spec.nodes.count > 1:
        return [(("nodes", "flavour"), "solo boxes come one at a time")]
    return []


class Boxes(NamespaceNodes):
    """The box provider: the local namespaces, labelled by the box config."""

    def provider_id(self, node: Node) -> str:
        return f"box:{super().provider_id(node)}"


BOX = ProviderKind(spec=SpecKind("box", BoxConfig, BoxNodes, box_rules), implementation=Boxes)


def _dlvm(cli: Cli, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`dlvm ARGS` with the box kind registered (this file as the program)."""
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**cli.env(), "DLVM_NO_AGENT": "1"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dlvm {' '.join(args)} exited {result.returncode}\n{result.stderr}")
    return result


def test_a_kind_registered_only_here_runs_every_verb(cli: Cli, tmp_path: Path) -> None:
    from harness import unique_name

    name = unique_name("box")
    spec = tmp_path / "box.yaml"
    head = f"name: {name}\nprovider: {{kind: box, label: mine}}\n"
    spec.write_text(
        head + "nodes: {count: 2, flavour: mint}\nsetup: echo set >> ~/setup-runs\n"
        "job: {command: 'echo rank $DLVM_NODE_RANK of $DLVM_NUM_NODES'}\n"
    )
    # load time: its rule at its line, and a key of another kind refused
    solo = tmp_path / "solo.yaml"
    solo.write_text(head + "nodes: {count: 2, flavour: solo}\n")
    refused = _dlvm(cli, "plan", str(solo), check=False)
    assert refused.returncode == 2
    assert f"{solo}:3:" in refused.stderr and "solo boxes come one at a time" in refused.stderr
    spot = tmp_path / "spot.yaml"
    spot.write_text(head + "nodes: {count: 1, spot: true}\n")
    refused = _dlvm(cli, "plan", str(spot), check=False)
    assert refused.returncode == 2 and "only kinds gcp, aws take it" in refused.stderr
    assert "node-1" in _dlvm(cli, "plan", str(spec)).stdout
    _dlvm(cli, "render", str(spec), "--output", str(tmp_path / "tf"))
    assert (tmp_path / "tf" / "terraform.tfvars.json").exists()
    _dlvm(cli, "up", str(spec), "--yes")
    try:
        status = json.loads(_dlvm(cli, "status", name, "--json").stdout)
        assert [node["state"] for node in status["nodes"]] == ["running", "running"]
        ranks = _dlvm(cli, "exec", name, "--", "cat ~/setup-runs; echo $DLVM_NODE_RANK").stdout
        assert ranks.count("set") == 2 and "[node-1] 1" in ranks
        launched = _dlvm(cli, "launch", str(spec)).stdout
        assert "rank 0 of 2" in launched and "rank 1 of 2" in launched
        _dlvm(cli, "scale", name, "3", "--yes")
        assert "[node-2] 2" in _dlvm(cli, "exec", name, "--", "echo $DLVM_NODE_RANK").stdout
        _dlvm(cli, "autostop", name, "--idle", "45")
        _dlvm(cli, "stop", name)
        stopped = json.loads(_dlvm(cli, "status", name, "--json").stdout)
        assert {node["state"] for node in stopped["nodes"]} == {"stopped"}
        _dlvm(cli, "start", name)
        again = _dlvm(cli, "exec", name, "--", "cat ~/setup-runs | wc -l").stdout
        assert again.count("] 1") == 3  # setup once per node, kept across stop and start
    finally:
        _dlvm(cli, "down", name, "--yes")
    assert not (cli.home / "clusters" / name).exists()


if __name__ == "__main__":
    # The one line a new kind adds to dlvm (in providers/registry.py), made here instead.
    registry.KINDS[BOX.name] = BOX
    from dlvm_cluster.cli.app import main

    sys.argv[0] = "dlvm"
    os.environ.setdefault("NO_COLOR", "1")
    main()
