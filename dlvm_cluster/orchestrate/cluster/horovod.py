"""Horovod on the nodes: with `job.framework: horovod`, `up` and `scale` make sure every
node can run horovodrun before they report done.

Horovod's last release is source only and needs a patched build (nodeside/build_horovod.sh
documents why and how), minutes of compiling. So it is built at most once per
cluster: on the head, which caches the wheel; nodes that lack Horovod get that wheel copied
from the head over the cluster's own SSH (the mesh horovodrun uses), and install it, never
rebuilding; each checks the wheel against the hash the head recorded when it built it (the
script checks the source against its published hash before building). Nodes that can
already `import horovod.torch` and run horovodrun are left alone. Each node then keeps a
stamp holding the setup digest (see files.setup_digest), so a later `up` with the same setup
and env checks nothing more; a changed setup (which may have changed the node's Python)
checks again.
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
from dlvm_cluster.orchestrate.cluster.files import setup_digest
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.fanout import LineSink, run_on_nodes
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.results import CommandResult, GroupResult
from dlvm_cluster.shell import quote_path
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState

BUILD_SCRIPT = nodeside.path("build_horovod.sh")
STEP = "horovod"
STAMPED, PRESENT, MISSING = (
    "__dlvm_horovod_stamped__",
    "__dlvm_horovod_present__",
    "__dlvm_horovod_missing__",
)
WHEEL_LINE = "DLVM_HOROVOD_WHEEL="
HASH_LINE = "DLVM_HOROVOD_SHA256="
USABLE = "python3 -c 'import horovod.torch' >/dev/null 2>&1 && command -v horovodrun >/dev/null"
"""What `horovod` jobs need of a node: the Python they run (`python3`, see launch/horovod.py)
imports horovod.torch, and horovodrun is on PATH."""


def horovod_stamp(cluster: str) -> str:
    return f"{node_dir(cluster)}/horovod.sha256"


def job_needs_horovod(loaded: LoadedSpec) -> bool:
    job = loaded.spec.job
    return job is not None and job.framework == "horovod"


def ensure_horovod(
    pool: SshPool,
    inventory: Inventory,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
) -> tuple[str, ...]:
    """Every node of `nodes` can run horovodrun afterwards, or this raises naming the nodes
    (and output) that failed; returns those that got it now. Nothing happens unless the
    job's framework is horovod."""
    if not nodes or not job_needs_horovod(loaded):
        return ()
    cluster = inventory.cluster
    env = loaded.spec.plain_env()
    digest = setup_digest(
        loaded, secret_env.resolve(loaded.spec), ClusterState.for_name(cluster).stamp_key()
    )
    stamp = quote_path(horovod_stamp(cluster))
    write_stamp = f"mkdir -p {quote_path(node_dir(cluster))} && echo {digest} > {stamp}"

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

    # 1. Which nodes are stamped, which have Horovod, which lack it.
    found: dict[str, str] = {}

    def probe_sink(node: Node, stream: str, text: str) -> None:
        if text in (STAMPED, PRESENT, MISSING):
            found[node.name] = text

    probe = (
        f'if [ "$(cat {stamp} 2>/dev/null)" = {digest} ]; then echo {STAMPED}; '
        f"elif {USABLE}; then echo {PRESENT} && {write_stamp}; else echo {MISSING}; fi"
    )
    _raise_failed(on(nodes, probe, probe_sink), "cannot check for Horovod")
    missing = [node for node in nodes if found.get(node.name) == MISSING]
    if not missing:
        return ()

    # 2. The wheel, on the head: built there once (or found in its cache); installed there
    # too when the head lacks Horovod.
    head = inventory.head
    folder = node_dir(cluster)
    script = f"{folder}/build_horovod.sh"
    run_everywhere(
        pool,
        [head, *(node for node in missing if node.name != head.name)],
        f"mkdir -p {quote_path(folder)} && cat > {quote_path(script)}",
        BUILD_SCRIPT.read_bytes(),
        "cannot send the Horovod build script",
    )
    mode = "install" if any(node.name == head.name for node in missing) else "wheel"
    progress.stage(f"{STEP}: wheel on {head.name} (built once, minutes; cached after)")
    wheel: list[str] = []
    sha256: list[str] = []

    def build_sink(node: Node, stream: str, text: str) -> None:
        if text.startswith(WHEEL_LINE):
            wheel.append(text.removeprefix(WHEEL_LINE))
        elif text.startswith(HASH_LINE):
            sha256.append(text.removeprefix(HASH_LINE))
        else:
            progress.line(node, stream, text)

    built = on([head], f"bash {quote_path(script)} {mode}", build_sink)
    _raise_failed(built, f"cannot build Horovod on {head.name}")
    if not wheel or not sha256 or not re.fullmatch(r"[0-9a-f]{64}", sha256[-1]):
        raise RemoteError(
            f"the Horovod build on {head.name} named no wheel and hash",
            hint="run `dlvm up` again; `dlvm ssh` to the head to look at its ~/.cache/dlvm",
        )
    installed = [head.name] if mode == "install" else []

    # 3. The others get that wheel from the head, over the cluster's SSH, and install it.
    others = [node for node in missing if node.name != head.name]
    if others:
        remote_wheel = f"{folder}/wheels/{PurePosixPath(wheel[-1]).name}"
        progress.stage(f"{STEP}: copy the wheel from {head.name} to {len(others)} node(s)")
        copied = on([head], _send_all(wheel[-1], remote_wheel, others), progress.line)
        _raise_failed(copied, f"cannot copy the Horovod wheel from {head.name}")
        progress.stage(f"{STEP}: install on {len(others)} node(s)")
        progress.count(STEP, 0, len(others), "nodes")
        done: list[str] = []

        def counted(result: CommandResult) -> None:
            if result.ok:
                done.append(result.node)
                progress.count(STEP, len(done), len(others), "nodes")

        install = (
            f"bash {quote_path(script)} install-wheel {quote_path(remote_wheel)} {sha256[-1]} "
            f"&& {USABLE}"
        )
        _raise_failed(on(others, install, progress.line, counted), "cannot install Horovod")
        installed += [node.name for node in others]
    _raise_failed(
        on(missing, f"{USABLE} && {write_stamp}", progress.line), "Horovod is still not usable"
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
