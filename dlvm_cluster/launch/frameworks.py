"""The frameworks a job can name (`job.framework`), each a registry entry: its planner, whether
it is elastic, and the software it needs on every node, if any.

    FRAMEWORKS[name] = Framework(name, plan, elastic, node_setup)

A framework's node setup is a value (`NodeSetup`), not code: `up`, `scale` and a recovery run
it the same way for every framework (orchestrate/cluster/framework_setup.py): check each node
(stamped, or already usable), build an artifact once on the head with the framework's node
program (a script of nodeside/), copy it from the head to the nodes that lack it over the
cluster's own SSH, install it there, and stamp the nodes. The spec's `Framework` literal
lists the same names (tests/unit/test_launch.py checks it: the spec cannot import launch).
"""

from __future__ import annotations

from dataclasses import dataclass

from dlvm_cluster.launch import accelerate, deepspeed, horovod, mpi, none, torchrun
from dlvm_cluster.launch.plan import Planner


@dataclass(frozen=True)
class NodeSetup:
    """Software a framework's jobs need on every node, and how to get it there."""

    name: str  # in stamps, markers and the `up --json` key: "horovod"
    shown: str  # in progress and summaries: "Horovod"
    usable: str  # shell text that succeeds on a node that has it
    build_script: str  # the nodeside/ program that builds it on the head: `wheel|install`
    artifact_line: str  # the line prefix by which the build names its artifact's path
    hash_line: str  # the line prefix by which the build names the artifact's SHA-256
    install: str  # shell text that installs `{artifact}` with `{script}`, checking `{sha256}`
    build_note: str = "built once, minutes; cached after"
    # What this machine can send for it, for nodes that cannot reach the package index: the
    # prefix of the build script's `needs` answer (one JSON line; "": nothing is sent), and
    # the prefix P of the script's pins (P_VERSION, P_SOURCE_SHA256, P_DEPENDENCIES) and of
    # the variables that hand it what was sent (P_SDIST, P_WHEEL, P_WHEEL_SHA256,
    # P_WHEELHOUSE); the package is P in lower case.
    needs_line: str = ""
    pins: str = ""


@dataclass(frozen=True)
class Framework:
    name: str
    plan: Planner
    elastic: bool = False  # takes `nnodes: "MIN:MAX"` and keeps training through scale
    node_setup: NodeSetup | None = None


HOROVOD_SETUP = NodeSetup(
    name="horovod",
    shown="Horovod",
    usable="python3 -c 'import horovod.torch' >/dev/null 2>&1 && command -v horovodrun >/dev/null",
    build_script="build_horovod.sh",
    artifact_line="DLVM_HOROVOD_WHEEL=",
    hash_line="DLVM_HOROVOD_SHA256=",
    install="bash {script} install-wheel {artifact} {sha256}",
    needs_line="DLVM_HOROVOD_NEEDS=",
    pins="HOROVOD",
)
"""Horovod's last release is source only and needs a patched build (nodeside/build_horovod.sh
says why): built once on the head, its wheel shared. `horovod` jobs need of a node that the
Python they run (`python3`, see launch/horovod.py) imports horovod.torch and that horovodrun
is on PATH."""

FRAMEWORKS: dict[str, Framework] = {
    entry.name: entry
    for entry in (
        Framework("torchrun", torchrun.plan, elastic=True),
        Framework("horovod", horovod.plan, elastic=True, node_setup=HOROVOD_SETUP),
        Framework("deepspeed", deepspeed.plan),
        Framework("accelerate", accelerate.plan),
        Framework("mpi", mpi.plan),
        Framework("none", none.plan),
    )
}


def elastic_names() -> list[str]:
    return [name for name, entry in FRAMEWORKS.items() if entry.elastic]
