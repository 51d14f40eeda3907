"""up, down, plan and render: spec -> render -> terraform -> inventory -> SSH -> files -> setup."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster import autostop, power
from dlvm_cluster.orchestrate.cluster.boot import wait_for_boot
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.files import (
    SetupReport,
)
from dlvm_cluster.orchestrate.cluster.mesh import uninstall_mesh
from dlvm_cluster.orchestrate.cluster.prepare import (
    converge_request,
    install_watcher,
    mount_storage,
    prepare_nodes,
    wait_for_ssh,
    with_storage,
)
from dlvm_cluster.orchestrate.cluster.records import (
    record_kind,
)
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NO_TRUST, KeyTrust, Provider
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.remote import agent_process
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec, StorageMount


@dataclass(frozen=True)
class UpResult:
    inventory: Inventory
    provisioned: bool  # Terraform changed something
    files_sent: int
    setup: SetupReport
    seconds: float
    started: tuple[str, ...] = ()  # nodes that were stopped and were started on their disks

    @property
    def changed(self) -> bool:
        return (
            self.provisioned
            or self.files_sent > 0
            or bool(self.setup.ran or any(self.setup.frameworks.values()))
            or bool(self.started)
        )


def provision(
    cluster: Cluster,
    loaded: LoadedSpec,
    progress: Progress,
    *,
    trust: KeyTrust = NO_TRUST,
    wait: float | None = None,
) -> tuple[Inventory, bool, list[str]]:
    """The provider makes, converges or adopts the nodes (starting stopped ones first); the
    inventory, whether the provider changed anything, and the nodes started, recorded.
    `trust`: the host keys seen for the first time that are accepted (others: UnpinnedHostKeys).
    `wait`: seconds the machines may take to be created (None: the provider's default)."""
    request = converge_request(cluster, loaded, progress, trust=trust, wait=wait)
    record_kind(cluster.state, loaded.spec.provider.kind)
    started: list[str] = []
    if request.previous is not None:
        # A stopped node is started on its disk (never recreated); the provider then finds
        # it answering as before.
        power.record_usage(cluster, request.previous)  # a stop while no dlvm ran ends here
        started = power.start_stopped(cluster, request.previous, progress)
    inventory, changed = cluster.provider.provision(request)
    inventory = with_storage(inventory, loaded.spec)
    cluster.save_inventory(inventory)
    return inventory, changed, started


@dataclass(frozen=True)
class ScaleUndo:
    """What `up` would undo of a `dlvm scale`: the count scale left, and the file's."""

    cluster: str
    scaled: int
    in_file: int
    file_name: str

    def describe(self) -> str:
        change = "add" if self.in_file > self.scaled else "remove"
        return (
            f"cluster {self.cluster} was scaled to {self.scaled} node(s); {self.file_name} says "
            f"{self.in_file}: up would {change} {abs(self.in_file - self.scaled)} node(s)"
        )


class WouldUndoScale(UsageError):
    """`up` refused to undo a `dlvm scale` it was not told to undo; the caller decides."""

    def __init__(self, undo: ScaleUndo) -> None:
        super().__init__(
            undo.describe(),
            hint=f"confirm to converge to the file's {undo.in_file} node(s), or set "
            f"nodes.count to {undo.scaled} in {undo.file_name}",
        )
        self.undo = undo


def scale_undo(cluster: Cluster, loaded: LoadedSpec) -> ScaleUndo | None:
    """Whether `up` with this file would undo a `dlvm scale` (None: it would not)."""
    spec = loaded.spec
    scaled = cluster.scaled_count()
    if scaled is None or scaled == spec.nodes.count:
        return None
    return ScaleUndo(spec.name, scaled, spec.nodes.count, loaded.path.name)


def up(
    cluster: Cluster,
    loaded: LoadedSpec,
    progress: Progress,
    *,
    rerun_setup: bool = False,
    undo_scale: bool = False,
    trust: KeyTrust = NO_TRUST,
    wait: float | None = None,
) -> UpResult:
    """Create or converge the cluster; a second run on a healthy cluster changes nothing.

    A cluster resized by `dlvm scale` is converged back to the file's count only with
    `undo_scale`; else WouldUndoScale says what would change. Machines that present a host
    key seen for the first time are adopted only when `trust` accepts it; else
    UnpinnedHostKeys lists them, before anything is stored or sent. `wait`: seconds the
    machines may take to be created (a flex-start VM waits for capacity meanwhile). On a
    cluster whose spec is the one applied, the nodes are reached through its warm agent
    when one answers (Cluster.through_agent), so a no-op `up` opens no connection itself."""
    begun = time.monotonic()
    cluster.provider.check_host()
    state = cluster.state
    with cluster.lock("up"):
        undo = scale_undo(cluster, loaded)
        if undo is not None and not undo_scale:
            raise WouldUndoScale(undo)
        state.check_permissions()
        state.ensure_key_pair()
        if cluster.is_applied(loaded):
            # Unchanged: what `up` does on the nodes only checks and keeps them, which the
            # agent's warm connections carry while they serve the nodes as recorded.
            cluster.through_agent()
        _finish_taken_down(cluster, progress)
        inventory, provisioned, started = provision(
            cluster, loaded, progress, trust=trust, wait=wait
        )
        synced, setup = prepare_nodes(
            cluster,
            loaded,
            progress,
            nodes=inventory.nodes,
            rerun=rerun_setup,
            restarted=provisioned or bool(started),
        )
        power.record_usage(cluster, inventory)
        return UpResult(
            inventory,
            provisioned=provisioned,
            files_sent=sum(r.sent_files for r in synced),
            setup=setup,
            seconds=time.monotonic() - begun,
            started=tuple(started),
        )


def _finish_taken_down(cluster: Cluster, progress: Progress) -> None:
    """A cluster whose nodes powered off for autostop's `down` is deleted now (its nodes could
    not delete themselves), so that `up` makes it anew; says so."""
    previous = cluster.inventory
    mark = power.taken_down_mark(cluster, previous) if previous is not None else None
    if mark is None:
        return
    when = time.strftime("%H:%M", time.localtime(mark.at))
    progress.note(f"cluster {cluster.name} was taken down by {mark.by} at {when}: making it anew")
    cluster.provider.destroy(progress)
    cluster.forget_inventory()


@dataclass(frozen=True)
class StartResult:
    inventory: Inventory
    started: tuple[str, ...]  # the nodes that were stopped
    seconds: float


def start(cluster: Cluster, progress: Progress) -> StartResult:
    """Start a stopped cluster's nodes on their disks and wait for SSH with the pinned host
    keys; nothing is pushed or set up (`up` does that, and skips setup whose stamp holds)."""
    begun = time.monotonic()
    state = cluster.state
    with cluster.lock("start"):
        inventory = cluster.inventory
        if inventory is None:
            raise UsageError(
                f"cluster {state.name!r} has no nodes recorded", hint="create it with `dlvm up`"
            )
        mark = power.taken_down_mark(cluster, inventory)
        if mark is not None:  # deleted VMs cannot start; a local node powered off for down
            when = time.strftime("%H:%M", time.localtime(mark.at))
            raise UsageError(
                f"cluster {state.name!r} was taken down by {mark.by} at {when}: there is "
                "nothing to start",
                hint="make it anew with `dlvm up`",
            )
        power.record_usage(cluster, inventory)
        started = power.start_stopped(cluster, inventory, progress)
        loaded = cluster.require_applied()
        wait_for_ssh(cluster.pool(), inventory.nodes, progress)
        # A local node's mounts ended with its processes; gcsfuse units come back by
        # themselves, and mounting again is harmless.
        mount_storage(cluster, loaded.spec, inventory.nodes, progress)
        # A local node's watcher ended with its processes; a VM's systemd starts its own.
        install_watcher(cluster, loaded, progress, inventory.nodes, restarted=bool(started))
        # Each started VM runs its boot-time setup again.
        wait_for_boot(cluster.pool(), inventory.nodes, cluster.provider.boot_readiness(), progress)
        power.record_usage(cluster, inventory)
    return StartResult(inventory, tuple(started), time.monotonic() - begun)


def down(cluster: Cluster, progress: Progress) -> float:
    """Destroy everything `up` made, then remove the state dir (still holding the lock, so no
    other command sees it half gone). Safe to run again."""
    started = time.monotonic()
    state = cluster.state
    with cluster.lock("down"):
        agent_process.stop(state.root)  # warm connections first: nothing of dlvm's left running
        cluster.jobs.stop_supervisors()  # no supervisor may replace a node while they go
        provider = cluster.provider
        inventory = cluster.inventory
        if inventory is not None and not provider.owns_machines:
            # Machines dlvm did not create are only forgotten, after removing what dlvm put there.
            progress.stage("cleaning up the machines")
            try:
                uninstall_mesh(cluster.pool(), inventory.nodes, state.name)
            except RemoteError as exc:
                progress.note(f"warning: {exc} (the cluster is forgotten all the same)")
            cluster.close()
        provider.destroy(progress)
        shutil.rmtree(state.root, ignore_errors=True)
    return time.monotonic() - started


@dataclass(frozen=True)
class PlanResult:
    cluster: str
    changes: tuple[tuple[str, str], ...]  # (action, what: a resource address or a host)
    summary: str
    exists: bool
    notes: tuple[str, ...] = ()  # the provider's warnings and the hourly price
    storage: tuple[StorageMount, ...] = ()  # mounted on every node; the checkpoint one marked
    checkpoint_mount: str = ""  # DLVM_CHECKPOINT_DIR; empty: none


def _cost_notes(spec: ClusterSpec, provider: Provider) -> list[str]:
    """What stopped nodes cost, and what stops them: autostop and max_hours."""
    notes = []
    rates = provider.hourly_rates()
    if rates is not None:
        count = spec.nodes.count
        notes.append(
            f"stopped: ${rates.stopped * count:.2f}/h for the disks of {count} node(s); "
            f"running ${rates.running * count:.2f}/h with them"
        )
    if spec.autostop is None:
        notes.append("autostop: off (the cluster runs until `dlvm stop` or `dlvm down`)")
    else:
        notes.append(f"autostop: {autostop.describe(spec.autostop)}")
    return notes


def plan(cluster: Cluster, loaded: LoadedSpec, progress: Progress) -> PlanResult:
    """What `up` would do, as the spec's provider sees it: changes nothing."""
    spec = loaded.spec
    provider = cluster.provider
    notes = (*provider.plan_notes(), *_cost_notes(spec, provider))
    planned = provider.plan(converge_request(cluster, loaded, progress))
    checkpoint = spec.checkpoint_storage
    return PlanResult(
        spec.name,
        planned.changes,
        planned.summary,
        exists=planned.exists,
        notes=notes,
        storage=tuple(spec.storage),
        checkpoint_mount=checkpoint.mount if checkpoint else "",
    )


def render_to(cluster: Cluster, loaded: LoadedSpec, target: Path) -> RenderedModule:
    """Write the module and tfvars `up` would apply (creating the cluster's key pair)."""
    cluster.require(Feature.RENDER)
    state = cluster.state
    state.create()
    state.ensure_key_pair()
    module = cluster.provider.render()
    module.write(target)
    return module
