"""up, down, plan and render: spec -> render -> terraform -> inventory -> SSH -> files -> setup."""

from __future__ import annotations

import shlex
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dlvm_cluster import providers, secret_env
from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate import autostop, power
from dlvm_cluster.orchestrate.boot import wait_for_boot
from dlvm_cluster.orchestrate.files import SetupReport, install_secrets, push_files, run_setup
from dlvm_cluster.orchestrate.horovod import ensure_horovod
from dlvm_cluster.orchestrate.jobs import stop_supervisors
from dlvm_cluster.orchestrate.mesh import install_mesh, uninstall_mesh
from dlvm_cluster.orchestrate.reach import ssh_reach
from dlvm_cluster.orchestrate.records import (
    applied_digest,
    applied_spec,
    cluster_kind,
    load_inventory,
    open_pool,
    record_kind,
    save_applied,
    save_inventory,
    scaled_count,
    spec_digest,
)
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NO_TRUST, Converge, KeyTrust, Provider
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.remote import agent_process
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.results import SyncResult
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec, StorageMount
from dlvm_cluster.state import ClusterState

READY_TIMEOUT = 60.0
READY_STEP = "waiting for SSH"
SLOW_READY = 10.0  # seconds of waiting for SSH before naming the nodes not ready yet
MAX_NAMED = 8  # nodes named in that note; more are counted


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
            or bool(self.setup.ran or self.setup.horovod)
            or bool(self.started)
        )


def converge_request(
    loaded: LoadedSpec,
    state: ClusterState,
    progress: Progress,
    *,
    trust: KeyTrust = NO_TRUST,
    wait: float | None = None,
) -> Converge:
    """What a provider is told of an `up`, `scale` or `plan`: the spec, what the state dir
    recorded, how to ask the nodes over SSH, and how long machines may take to be created."""
    return Converge(
        loaded=loaded,
        state=state,
        previous=load_inventory(state),
        applied=applied_digest(state) == spec_digest(loaded.spec),
        progress=progress,
        reach=ssh_reach(state),
        trust=trust,
        wait=wait,
    )


def provision(
    loaded: LoadedSpec,
    state: ClusterState,
    progress: Progress,
    *,
    trust: KeyTrust = NO_TRUST,
    wait: float | None = None,
) -> tuple[Inventory, bool, list[str]]:
    """The provider makes, converges or adopts the nodes (starting stopped ones first); the
    inventory, whether the provider changed anything, and the nodes started, recorded.
    `trust`: the host keys seen for the first time that are accepted (others: UnpinnedHostKeys).
    `wait`: seconds the machines may take to be created (None: the provider's default)."""
    request = converge_request(loaded, state, progress, trust=trust, wait=wait)
    record_kind(state, loaded.spec.provider.kind)
    started: list[str] = []
    if request.previous is not None:
        # A stopped node is started on its disk (never recreated); the provider then finds
        # it answering as before.
        power.record_usage(state, request.previous)  # a stop while no dlvm ran ends here
        started = power.start_stopped(state, request.previous, progress)
    inventory, changed = providers.for_spec(loaded.spec).provision(request)
    inventory = with_storage(inventory, loaded.spec)
    save_inventory(state, inventory)
    return inventory, changed, started


def with_storage(inventory: Inventory, spec: ClusterSpec) -> Inventory:
    """The inventory that says where the spec's checkpoint storage is mounted on every node
    (DLVM_CHECKPOINT_DIR for setup, exec and jobs); record it after any provider call."""
    checkpoint = spec.checkpoint_storage
    return replace(inventory, checkpoint_dir=checkpoint.mount if checkpoint else "")


def mount_storage(
    pool: SshPool, state: ClusterState, spec: ClusterSpec, nodes: Sequence[Node], progress: Progress
) -> None:
    """Mount the spec's storage on `nodes`, as their provider says (idempotent, so every `up`
    runs it: a node replaced or rebooted gets its mounts back)."""
    script = providers.for_spec(spec).storage_script(spec, state)
    if not script or not nodes:
        return
    progress.stage("mounting storage")
    run_everywhere(pool, nodes, f"sh -e -c {shlex.quote(script)}", b"", "cannot mount storage")


def install_watcher(
    pool: SshPool,
    state: ClusterState,
    inventory: Inventory,
    loaded: LoadedSpec,
    progress: Progress,
    nodes: Sequence[Node],
    *,
    restarted: bool,
) -> None:
    """The autostop watcher on `nodes`, with the settings in force (the file's, or those
    `dlvm autostop` set since the last `up`); `restarted`: max_hours counts from now."""
    autostop.install(
        pool,
        inventory,
        loaded.spec,
        providers.for_spec(loaded.spec),
        progress,
        settings=autostop.settings_in_force(state, loaded.spec),
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


def prepare_nodes(
    pool: SshPool,
    state: ClusterState,
    inventory: Inventory,
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
    max_hours counts from now), secrets, storage, files, setup, and Horovod where the job
    needs it; then waits until every node of the cluster has finished its boot-time setup
    (the GPU network of A3/A4 VMs), all on one transport, before a job can run."""
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
    install_watcher(pool, state, inventory, loaded, progress, nodes, restarted=restarted)
    install_secrets(pool, state, nodes, secret_env.resolve(loaded.spec))
    mount_storage(pool, state, loaded.spec, nodes, progress)
    # The nodes now match the spec; setup keeps its own per-node stamp, so a failed setup
    # still leaves a cluster that exec, ssh and a re-run of up can work with.
    save_applied(state, loaded, scaled=scaled)
    synced = push_files(pool, loaded, nodes, progress)
    setup = run_setup(pool, inventory, loaded, nodes, progress, rerun=rerun)
    horovod = ensure_horovod(pool, inventory, loaded, nodes, progress)
    readiness = providers.for_spec(loaded.spec).boot_readiness(loaded.spec)
    wait_for_boot(pool, inventory.nodes, readiness, progress)
    return synced, replace(setup, horovod=horovod)


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


def scale_undo(loaded: LoadedSpec) -> ScaleUndo | None:
    """Whether `up` with this file would undo a `dlvm scale` (None: it would not)."""
    spec = loaded.spec
    scaled = scaled_count(ClusterState.for_name(spec.name))
    if scaled is None or scaled == spec.nodes.count:
        return None
    return ScaleUndo(spec.name, scaled, spec.nodes.count, loaded.path.name)


def up(
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
    machines may take to be created (a flex-start VM waits for capacity meanwhile)."""
    begun = time.monotonic()
    spec = loaded.spec
    providers.for_spec(spec).check_host()
    state = ClusterState.for_name(spec.name)
    with state.lock("up"):
        undo = scale_undo(loaded)
        if undo is not None and not undo_scale:
            raise WouldUndoScale(undo)
        state.check_permissions()
        state.ensure_key_pair()
        _finish_taken_down(state, progress)
        inventory, provisioned, started = provision(loaded, state, progress, trust=trust, wait=wait)
        with open_pool(state, inventory) as pool:
            synced, setup = prepare_nodes(
                pool,
                state,
                inventory,
                loaded,
                progress,
                nodes=inventory.nodes,
                rerun=rerun_setup,
                restarted=provisioned or bool(started),
            )
        power.record_usage(state, inventory)
        return UpResult(
            inventory,
            provisioned=provisioned,
            files_sent=sum(r.sent_files for r in synced),
            setup=setup,
            seconds=time.monotonic() - begun,
            started=tuple(started),
        )


def _finish_taken_down(state: ClusterState, progress: Progress) -> None:
    """A cluster whose nodes powered off for autostop's `down` is deleted now (its nodes could
    not delete themselves), so that `up` makes it anew; says so."""
    previous = load_inventory(state)
    mark = power.taken_down_mark(state, previous) if previous is not None else None
    if mark is None:
        return
    when = time.strftime("%H:%M", time.localtime(mark.at))
    progress.note(f"cluster {state.name} was taken down by {mark.by} at {when}: making it anew")
    providers.for_kind(cluster_kind(state) or providers.DEFAULT_KIND).destroy(state, progress)
    state.inventory_path.unlink(missing_ok=True)
    state.applied_spec_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StartResult:
    inventory: Inventory
    started: tuple[str, ...]  # the nodes that were stopped
    seconds: float


def start(state: ClusterState, progress: Progress) -> StartResult:
    """Start a stopped cluster's nodes on their disks and wait for SSH with the pinned host
    keys; nothing is pushed or set up (`up` does that, and skips setup whose stamp holds)."""
    begun = time.monotonic()
    with state.lock("start"):
        inventory = load_inventory(state)
        if inventory is None:
            raise UsageError(
                f"cluster {state.name!r} has no nodes recorded", hint="create it with `dlvm up`"
            )
        mark = power.taken_down_mark(state, inventory)
        if mark is not None:  # deleted VMs cannot start; a local node powered off for down
            when = time.strftime("%H:%M", time.localtime(mark.at))
            raise UsageError(
                f"cluster {state.name!r} was taken down by {mark.by} at {when}: there is "
                "nothing to start",
                hint="make it anew with `dlvm up`",
            )
        power.record_usage(state, inventory)
        started = power.start_stopped(state, inventory, progress)
        loaded = applied_spec(state)
        with open_pool(state, inventory) as pool:
            wait_for_ssh(pool, inventory.nodes, progress)
            # A local node's mounts ended with its processes; gcsfuse units come back by
            # themselves, and mounting again is harmless.
            mount_storage(pool, state, loaded.spec, inventory.nodes, progress)
            # A local node's watcher ended with its processes; a VM's systemd starts its own.
            install_watcher(
                pool, state, inventory, loaded, progress, inventory.nodes, restarted=bool(started)
            )
            # Each started VM runs its boot-time setup again.
            readiness = providers.for_spec(loaded.spec).boot_readiness(loaded.spec)
            wait_for_boot(pool, inventory.nodes, readiness, progress)
        power.record_usage(state, inventory)
    return StartResult(inventory, tuple(started), time.monotonic() - begun)


def down(state: ClusterState, progress: Progress) -> float:
    """Destroy everything `up` made, then remove the state dir (still holding the lock, so no
    other command sees it half gone). Safe to run again."""
    started = time.monotonic()
    with state.lock("down"):
        agent_process.stop(state.root)  # warm connections first: nothing of dlvm's left running
        stop_supervisors(state)  # no supervisor may replace a node while they go
        provider = providers.for_kind(cluster_kind(state) or providers.DEFAULT_KIND)
        inventory = load_inventory(state)
        if inventory is not None and not provider.owns_machines:
            # Machines dlvm did not create are only forgotten, after removing what dlvm put there.
            progress.stage("cleaning up the machines")
            try:
                with open_pool(state, inventory) as pool:
                    uninstall_mesh(pool, inventory.nodes, state.name)
            except RemoteError as exc:
                progress.note(f"warning: {exc} (the cluster is forgotten all the same)")
        provider.destroy(state, progress)
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
    rates = provider.hourly_rates(spec)
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


def plan(loaded: LoadedSpec, progress: Progress) -> PlanResult:
    """What `up` would do, as the spec's provider sees it: changes nothing."""
    spec = loaded.spec
    state = ClusterState.for_name(spec.name)
    provider = providers.for_spec(spec)
    notes = (*provider.plan_notes(spec), *_cost_notes(spec, provider))
    planned = provider.plan(converge_request(loaded, state, progress))
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


def render_to(loaded: LoadedSpec, target: Path) -> RenderedModule:
    """Write the module and tfvars `up` would apply (creating the cluster's key pair)."""
    state = ClusterState.for_name(loaded.spec.name)
    state.create()
    state.ensure_key_pair()
    module = providers.for_spec(loaded.spec).render(loaded.spec, state)
    module.write(target)
    return module
