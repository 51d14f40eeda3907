"""A framework's node software (launch/frameworks.py, `NodeSetup`): with a job whose framework
needs some (Horovod), `up`, `scale` and a recovery make sure every node has it before they
report done. One generic runner serves every framework's setup.

Such software may be slow to build (Horovod's patched build: minutes of compiling). So it is
built at most once per cluster: on the head, whose build script caches the artifact and
prints its SHA-256; nodes that lack it get that artifact copied from the head over the
cluster's own SSH (the mesh the launchers use), and install it with the same script, which
checks it against that hash first, never rebuilding (Horovod's script also checks the source
against its published hash before building). Nodes where it is usable already are left
alone. Nodes that cannot reach the package index get what they need from this machine
(framework_supply.py): a wheel it has cached, or the pinned source for the head to build,
and the dependencies' wheels. Each node then keeps a stamp holding the setup digest (see
files.setup_digest), so a later `up` with the same setup and env checks nothing more; a
changed setup (which may have changed the node's Python) checks again.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from dlvm_cluster import nodeside, secret_env
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.frameworks import FRAMEWORKS, NodeSetup
from dlvm_cluster.orchestrate.cluster import framework_supply
from dlvm_cluster.orchestrate.cluster.files import setup_digest
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.fanout import run_on_nodes
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.results import CommandResult, GroupResult, LineSink
from dlvm_cluster.shell import quote_path
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState


def stamp_path(cluster: str, setup: NodeSetup) -> str:
    return f"{node_dir(cluster)}/{setup.name}.sha256"


def markers(setup: NodeSetup) -> tuple[str, str, str]:
    """The probe's answers: stamped, present (usable, not stamped yet), missing."""
    mark = f"__dlvm_{setup.name}"
    return f"{mark}_stamped__", f"{mark}_present__", f"{mark}_missing__"


def node_setup_of(loaded: LoadedSpec) -> NodeSetup | None:
    """The node setup the spec's job's framework needs (None: none, or no job)."""
    job = loaded.spec.job
    return None if job is None else FRAMEWORKS[job.framework].node_setup


def ensure_frameworks(
    pool: SshPool,
    inventory: Inventory,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
) -> dict[str, tuple[str, ...]]:
    """Every node of `nodes` has the job's framework's software afterwards, or this raises
    naming the nodes (and output) that failed; returns {framework: nodes that got it now}."""
    setup = node_setup_of(loaded)
    if setup is None or not nodes:
        return {}
    installed = ensure(pool, inventory, loaded, nodes, progress, setup)
    return {setup.name: installed} if installed else {}


def ensure(
    pool: SshPool,
    inventory: Inventory,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
    setup: NodeSetup,
) -> tuple[str, ...]:
    """`setup` on `nodes` (see the module docstring); the nodes that got it now."""
    cluster = inventory.cluster
    env = loaded.spec.plain_env()
    digest = setup_digest(
        loaded, secret_env.resolve(loaded.spec), ClusterState.for_name(cluster).stamp_key()
    )
    stamp = quote_path(stamp_path(cluster, setup))
    write_stamp = f"mkdir -p {quote_path(node_dir(cluster))} && echo {digest} > {stamp}"
    stamped, present, missing_mark = markers(setup)
    step = setup.name

    def on(
        targets: Sequence[Node],
        command: str,
        sink: LineSink,
        on_done: Callable[[CommandResult], None] = lambda result: None,
    ) -> GroupResult:
        return run_on_nodes(
            pool,
            targets,
            lambda node: wrap(command, node_environment(inventory, node, env), cluster=cluster),
            sink=sink,
            on_done=on_done,
        )

    # 1. Which nodes are stamped, which have it, which lack it.
    found: dict[str, str] = {}

    def probe_sink(node: Node, stream: str, text: str) -> None:
        if text in (stamped, present, missing_mark):
            found[node.name] = text

    probe = (
        f'if [ "$(cat {stamp} 2>/dev/null)" = {digest} ]; then echo {stamped}; '
        f"elif {setup.usable}; then echo {present} && {write_stamp}; "
        f"else echo {missing_mark}; fi"
    )
    _raise_failed(on(nodes, probe, probe_sink), f"cannot check for {setup.shown}")
    missing = [node for node in nodes if found.get(node.name) == missing_mark]
    if not missing:
        return ()

    # 2. The artifact, on the head: built there once (or found in its cache); installed
    # there too when the head lacks it.
    head = inventory.head
    folder = node_dir(cluster)
    script = f"{folder}/{setup.build_script}"
    run_everywhere(  # the head builds with it; the others install with it
        pool,
        [head, *(node for node in missing if node.name != head.name)],
        f"mkdir -p {quote_path(folder)} && cat > {quote_path(script)}",
        nodeside.path(setup.build_script).read_bytes(),
        f"cannot send the {setup.shown} build script",
    )
    mode = "install" if any(node.name == head.name for node in missing) else "wheel"
    sent = framework_supply.Sent()
    if setup.needs_line:  # what this machine has, sent first: the nodes' index may be out of reach

        def ask(targets: Sequence[Node], command: str, sink: LineSink) -> GroupResult:
            asked = on(targets, command, sink)
            _raise_failed(asked, f"cannot ask what {setup.shown} needs")
            return asked

        sent = framework_supply.send(pool, setup, head, missing, folder, ask, script, progress)
    progress.stage(f"{step}: wheel on {head.name} ({setup.build_note})")
    artifact: list[str] = []
    sha256: list[str] = []

    def build_sink(node: Node, stream: str, text: str) -> None:
        if text.startswith(setup.artifact_line):
            artifact.append(text.removeprefix(setup.artifact_line))
        elif text.startswith(setup.hash_line):
            sha256.append(text.removeprefix(setup.hash_line))
        else:
            progress.line(node, stream, text)

    built = on([head], f"{sent.head_env}bash {quote_path(script)} {mode}", build_sink)
    _raise_failed(built, f"cannot build {setup.shown} on {head.name}")
    if not artifact or not sha256 or not re.fullmatch(r"[0-9a-f]{64}", sha256[-1]):
        raise RemoteError(
            f"the {setup.shown} build on {head.name} named no wheel and hash",
            hint="run `dlvm up` again; `dlvm ssh` to the head to look at its ~/.cache/dlvm",
        )
    installed = [head.name] if mode == "install" else []

    # 3. The others get that artifact from the head, over the cluster's SSH, and install it.
    others = [node for node in missing if node.name != head.name]
    if others:
        remote = f"{folder}/wheels/{PurePosixPath(artifact[-1]).name}"
        progress.stage(f"{step}: copy the wheel from {head.name} to {len(others)} node(s)")
        copied = on([head], _send_all(artifact[-1], remote, others), progress.line)
        _raise_failed(copied, f"cannot copy the {setup.shown} wheel from {head.name}")
        progress.stage(f"{step}: install on {len(others)} node(s)")
        progress.count(step, 0, len(others), "nodes")
        done: list[str] = []

        def counted(result: CommandResult) -> None:
            if result.ok:
                done.append(result.node)
                progress.count(step, len(done), len(others), "nodes")

        installing = setup.install.format(
            script=quote_path(script), artifact=quote_path(remote), sha256=sha256[-1]
        )
        install = f"{sent.others_env}{installing} && {setup.usable}"
        _raise_failed(on(others, install, progress.line, counted), f"cannot install {setup.shown}")
        installed += [node.name for node in others]
    _raise_failed(
        on(missing, f"{setup.usable} && {write_stamp}", progress.line),
        f"{setup.shown} is still not usable",
    )
    return tuple(installed)


def _send_all(wheel: str, remote: str, nodes: Sequence[Node]) -> str:
    """Shell text the head runs: send `wheel` to every node at once (by address, as
    horovodrun reaches them, through the cluster's ssh config); fails naming each node it
    could not reach."""
    receive = shlex.quote(_receive(remote))
    sends = [
        f"(ssh {shlex.quote(node.ip)} {receive} < {shlex.quote(wheel)} || "
        f"{{ echo 'cannot copy the wheel to {node.name}' >&2; exit 1; }}) & p{index}=$!"
        for index, node in enumerate(nodes)
    ]
    waits = [f"wait $p{index} || failed=1" for index in range(len(nodes))]
    return "failed=0; " + "; ".join(sends + waits) + '; exit "$failed"'


def _receive(path: str) -> str:
    """Shell text a node runs to take a file on stdin: whole or not at all."""
    target = quote_path(path)
    part = quote_path(path + ".part")
    folder = quote_path(str(PurePosixPath(path).parent))
    return f"mkdir -p {folder} && cat > {part} && mv {part} {target}"


def _raise_failed(result: GroupResult, what: str) -> None:
    if not result.failed:
        return
    details = [
        f"{failed.node} ({failed.describe()}): " + " | ".join(list(failed.tail)[-8:])
        for failed in result.failed
    ]
    raise RemoteError(
        f"{what}: " + "; ".join(details),
        hint="the cluster is up for inspection (`dlvm ssh`); fix the node and run `dlvm up` again",
    )
