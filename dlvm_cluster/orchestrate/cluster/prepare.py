"""Bring nodes to the spec, for `up`, `start`, `scale` and a recovery alike: SSH ready, the
intra-cluster mesh, the autostop watcher, secrets, storage, files, setup and frameworks; and
the request a provider is handed to converge."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from dlvm_cluster import secret_env
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster import autostop
from dlvm_cluster.orchestrate.cluster.boot import wait_for_boot
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.files import (
    SetupReport,
    install_secrets,
    push_files,
    run_setup,
)
from dlvm_cluster.orchestrate.cluster.framework_setup import ensure_frameworks
from dlvm_cluster.orchestrate.cluster.mesh import install_mesh
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NO_TRUST, Converge, KeyTrust
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.results import SyncResult
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec

READY_TIMEOUT = 60.0
READY_STEP = "waiting for SSH"
SLOW_READY = 10.0  # seconds of waiting for SSH before naming the nodes not ready yet
MAX_NAMED = 8  # nodes named in that note; more are counted


def converge_request(
    cluster: Cluster,
    loaded: LoadedSpec,
    progress: Progress,
    *,
    trust: KeyTrust = NO_TRUST,
    wait: float | None = None,
) -> Converge:
    """What a provider is told of an `up`, `scale` or `plan`: the spec, what the state dir
    recorded, how to ask the nodes over SSH (through the command's pool), and how long
    machines may take to be created."""
    return Converge(
        loaded=loaded,
        state=cluster.state,
        previous=cluster.inventory,
        applied=cluster.is_applied(loaded),
        progress=progress,
        reach=cluster.reach(),
        trust=trust,
        wait=wait,
    )


def with_storage(inventory: Inventory, spec: ClusterSpec) -> Inventory:
    """The inventory that says where the spec's checkpoint storage is mounted on every node
    (DLVM_CHECKPOINT_DIR for setup, exec and jobs); record it after any provider call."""
    checkpoint = spec.checkpoint_storage
    return replace(inventory, checkpoint_dir=checkpoint.mount if checkpoint else "")


def mount_storage(
    cluster: Cluster, spec: ClusterSpec, nodes: Sequence[Node], progress: Progress
) -> None:
    """Mount the spec's storage on `nodes`, as their provider says (idempotent, so every `up`
    runs it: a node replaced or rebooted gets its mounts back)."""
    if spec.storage:
        cluster.require(Feature.STORAGE)
    script = cluster.provider.storage_script()
    if not script or not nodes:
        return
    progress.stage("mounting storage")
    run_everywhere(
        cluster.pool(), nodes, f"sh -e -c {shlex.quote(script)}", b"", "cannot mount storage"
    )


def install_watcher(
    cluster: Cluster,
    loaded: LoadedSpec,
    progress: Progress,
    nodes: Sequence[Node],
    *,
    restarted: bool,
) -> None:
    """The autostop watcher on `nodes`, with the settings in force (the file's, or those
    `dlvm autostop` set since the last `up`); `restarted`: max_hours counts from now."""
    autostop.install(
        cluster.pool(),
        cluster.require_inventory(),
        loaded.spec,
        cluster.provider,
        progress,
        settings=autostop.settings_in_force(cluster.state, loaded.spec),
        nodes=tuple(nodes),
        restarted=restarted,
    )


class ReadyWatch:
    """Counts nodes as they answer SSH and, once waiting has taken SLOW_READY seconds, names
    those still waiting (again every SLOW_READY): on a big cluster a count alone hides which
    node is stuck, while naming them at once would be noise for the usual second of boot."""

    def __init__(
        self, progress: Progress, total: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._progress = progress
        self._total = total
        self._ready = 0
        self._lock = threading.Lock()  # ready() comes from the pool's connecting threads
        self._clock = clock
        self._started = clock()
        self._next_note = self._started + SLOW_READY
        progress.count(READY_STEP, 0, total, "nodes")

    def ready(self, node: Node) -> None:
        with self._lock:
            self._ready += 1
            self._progress.count(READY_STEP, self._ready, self._total, "nodes")

    def waiting(self, pending: Sequence[Node]) -> None:
        now = self._clock()
        if now < self._next_note:
            return
        self._next_note = now + SLOW_READY
        names = [node.name for node in pending[:MAX_NAMED]]
        if len(pending) > MAX_NAMED:
            names.append(f"and {len(pending) - MAX_NAMED} more")
        self._progress.note(
            f"still waiting for SSH after {now - self._started:.0f}s: {', '.join(names)}"
        )


def wait_for_ssh(pool: SshPool, nodes: Sequence[Node], progress: Progress) -> None:
    """Every node answers SSH with its pinned key, with a live count of those ready."""
    progress.stage(READY_STEP)
    if not nodes:
        return
    watch = ReadyWatch(progress, len(nodes))
    pool.wait_ready(
        nodes,
        time.monotonic() + READY_TIMEOUT,
        on_ready=watch.ready,
        on_pending=watch.waiting,
    )


def _push_applied_files(
    pool: SshPool, loaded: LoadedSpec, nodes: Sequence[Node], progress: Progress
) -> list[SyncResult]:
    """The files of `loaded`, just recorded as the applied spec: by the cluster's agent when
    the pool goes through it and it takes them (it pushes the applied spec), else over the
    pool."""
    if pool.relay is not None and loaded.spec.files:
        pushed = pool.relay.sync(pool.inventory, nodes, progress)
        if pushed is not None:
            return pushed
    return push_files(pool, loaded, nodes, progress)


def prepare_nodes(
    cluster: Cluster,
    loaded: LoadedSpec,
    progress: Progress,
    *,
    nodes: Sequence[Node],
    rerun: bool = False,
    scaled: bool = False,
    restarted: bool = False,
) -> tuple[list[SyncResult], SetupReport]:
    """Bring `nodes` to the spec: SSH ready, intra-cluster SSH (on every node, so old and new
    nodes know each other), the autostop watcher (`restarted`: the nodes just started, so
    max_hours counts from now), secrets, storage, files, setup, and the software the job's
    framework needs on its nodes (launch/frameworks.py); then waits until every node of the
    cluster has finished its boot-time setup (the GPU network of A3/A4 VMs), all on one
    transport, before a job can run. Everything goes through the cluster's one pool."""
    state, inventory, pool = cluster.state, cluster.require_inventory(), cluster.pool()
    wait_for_ssh(pool, nodes, progress)
    install_mesh(
        pool,
        inventory,
        inventory.nodes,
        private_key=state.internal_key_path.read_bytes(),
        public_key=state.internal_key_path.with_suffix(".pub").read_text(),
    )
    if not scaled:
        autostop.forget_override(state)  # `up`: the file's settings apply again
    install_watcher(cluster, loaded, progress, nodes, restarted=restarted)
    install_secrets(pool, state, nodes, secret_env.resolve(loaded.spec))
    mount_storage(cluster, loaded.spec, nodes, progress)
    # The nodes now match the spec; setup keeps its own per-node stamp, so a failed setup
    # still leaves a cluster that exec, ssh and a re-run of up can work with.
    cluster.save_applied(loaded, scaled=scaled)
    synced = _push_applied_files(pool, loaded, nodes, progress)
    setup = run_setup(pool, inventory, loaded, nodes, progress, rerun=rerun)
    frameworks = ensure_frameworks(pool, inventory, loaded, nodes, progress)
    booted = wait_for_boot(pool, inventory.nodes, cluster.provider.boot_readiness(), progress)
    return synced, replace(
        setup,
        frameworks=frameworks,
        gpu_network=booted.transport if booted else "",
        gpu_network_failed=booted.fell_back if booted else (),
    )
