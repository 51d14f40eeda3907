"""Push the spec's files to nodes (delta), pull results back, and run setup once per node."""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlvm_cluster import secret_env
from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.orchestrate.cluster.records import save_secret_names
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import install_secrets as install_secrets_script
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.fanout import run_on_nodes
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.results import CommandResult, SyncResult
from dlvm_cluster.remote.sync import PushWatch, pull, push
from dlvm_cluster.shell import quote_path
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState

SKIP_MARKER = "__dlvm_setup_unchanged__"


def setup_stamp(cluster: str) -> str:
    """Where a node keeps the digest of the setup it last ran for the cluster: in the
    cluster's own folder, so that clusters sharing a machine keep their own."""
    return f"{node_dir(cluster)}/setup.sha256"


def push_files(
    pool: SshPool,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    delete: bool = False,
    cancelled: Callable[[], bool] = lambda: False,
    delete_at_most: int | None = None,
) -> list[SyncResult]:
    """Every `files` entry to every node; raises naming the nodes that failed. `cancelled`
    is polled while bytes flow (the agent stops a push whose client went away)."""
    results: list[SyncResult] = []
    for entry in loaded.spec.files:
        source = loaded.source_path(entry)
        if not source.exists():  # else it would read as empty: with --delete, a wiped node
            raise UsageError(
                f"files: {entry.src} does not exist ({source})",
                hint="restore it, or change the spec's files entry and run `dlvm up FILE`",
            )
        step = f"sync {entry.src} -> {entry.dst}"
        progress.stage(step)
        tally = _ByteTally(progress, step, len(nodes))
        watch = PushWatch(planned=tally.planned, sent=tally.sent, cancelled=cancelled)
        batch = push(
            pool,
            nodes,
            source,
            entry.dst,
            exclude=entry.exclude,
            delete=delete,
            watch=watch,
            delete_at_most=delete_at_most,
        )
        results.extend(batch)
        failed = [r for r in batch if not r.ok]
        if failed:
            raise RemoteError(
                "sync failed: " + "; ".join(r.error for r in failed),
                hint="check `dlvm status`; run the command again to resume",
            )
    return results


class _ByteTally:
    """Bytes sent of bytes planned, summed over the nodes' worker threads. The total is known
    once every node's listing has told what it lacks: only then is it reported, so that a
    display never sees a total that grows (or a step that completes twice)."""

    def __init__(self, progress: Progress, step: str, nodes: int) -> None:
        self._progress = progress
        self._step = step
        self._lock = threading.Lock()
        self._waiting = nodes
        self._total = 0
        self._done = 0
        self._reported = -1

    def planned(self, size: int) -> None:
        with self._lock:
            self._total += size
            self._waiting -= 1
            self._report()

    def sent(self, size: int) -> None:
        with self._lock:
            self._done += size  # tar headers and padding included: capped when reported
            self._report()

    def _report(self) -> None:
        done = min(self._done, self._total)
        if self._waiting == 0 and self._total and done != self._reported:
            self._reported = done
            self._progress.count(self._step, done, self._total, "B")


def pull_files(pool: SshPool, nodes: Sequence[Node], remote: str, local: Path) -> list[SyncResult]:
    results = pull(pool, nodes, remote, local)
    failed = [r for r in results if not r.ok]
    if failed:
        raise RemoteError("pull failed: " + "; ".join(r.error for r in failed))
    return results


def setup_digest(loaded: LoadedSpec, secret_values: Mapping[str, str], key: bytes) -> str:
    """Changes when the setup text, the env, or a secret's value changes. Keyed (HMAC-SHA256
    with the cluster's stamp key, ClusterState.stamp_key): the stamp is readable on the node,
    and a plain hash over a short secret could be reversed by trying values."""
    spec = loaded.spec
    payload = json.dumps(
        {"setup": spec.setup, "env": spec.plain_env(), "secrets": dict(secret_values)},
        sort_keys=True,
    )
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def install_secrets(
    pool: SshPool, state: ClusterState, nodes: Sequence[Node], values: Mapping[str, str]
) -> None:
    """(Re)write every node's secrets file through stdin: never on a command line, and never
    through the cluster's agent (an empty one may go there). The names are recorded in the
    state dir, so that output is masked with every secret nodes hold."""
    content = secret_env.file_content(values) or b"\n"
    script = install_secrets_script(pool.inventory.cluster)
    what = "cannot write the secrets file"
    run_everywhere(pool, nodes, script, content, what, through_agent=not values)
    save_secret_names(state, values)


@dataclass(frozen=True)
class SetupReport:
    ran: tuple[str, ...]
    unchanged: tuple[str, ...]
    # framework -> the nodes that got its software now (cluster/framework_setup.py)
    frameworks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The transport jobs use between the nodes' GPUs, where the nodes set one up at boot
    # (cluster/boot.py): the GPU network's, or plain NCCL when a node's setup failed (those
    # nodes, with the step that failed); "" for nodes without one.
    gpu_network: str = ""
    gpu_network_failed: tuple[str, ...] = ()


def run_setup(
    pool: SshPool,
    inventory: Inventory,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    rerun: bool = False,
) -> SetupReport:
    """Run `setup` on nodes whose stamp differs (text or env changed), or on all with `rerun`.

    The script runs under `bash -e`; the stamp is written only after it succeeded, so a failed
    or interrupted setup runs again next time."""
    script = loaded.spec.setup
    if not script or not nodes:
        return SetupReport((), ())
    values = secret_env.resolve(loaded.spec)
    digest = setup_digest(loaded, values, ClusterState.for_name(inventory.cluster).stamp_key())
    folder = quote_path(node_dir(inventory.cluster))
    stamp = quote_path(setup_stamp(inventory.cluster))
    check = "false" if rerun else f'[ "$(cat {stamp} 2>/dev/null)" = {digest} ]'
    command = (
        f"if {check}; then echo {SKIP_MARKER}; else "
        f"bash -e -c {shlex.quote(script)} && mkdir -p {folder} && echo {digest} > {stamp}; fi"
    )
    unchanged: set[str] = set()
    progress.stage("setup")
    watch = _SetupWatch(progress, len(nodes))

    def sink(node: Node, stream: str, text: str) -> None:
        if text == SKIP_MARKER:
            unchanged.add(node.name)
        else:
            progress.line(node, stream, text)

    def done(ended: CommandResult) -> None:
        watch.finished(ended, skipped=ended.node in unchanged)

    result = run_on_nodes(
        pool,
        nodes,
        lambda node: wrap(
            command,
            node_environment(inventory, node, loaded.spec.plain_env()),
            cluster=inventory.cluster,
        ),
        sink=sink,
        redact=secret_env.redactor(values),
        on_done=done,
    )
    if result.failed:
        details = []
        for failed in result.failed:
            tail = " | ".join(list(failed.tail)[-5:])
            details.append(f"{failed.node} ({failed.describe()}): {tail}")
        raise RemoteError(
            "setup failed on " + "; ".join(details),
            hint="the cluster is up for inspection (`dlvm ssh`); fix setup and run `dlvm up` again",
        )
    ran = tuple(r.node for r in result.results if r.node not in unchanged)
    return SetupReport(ran=ran, unchanged=tuple(sorted(unchanged)))


SETUP_STEP = "setup"
PER_NODE_LINES = 16  # clusters up to this size get a line per node as its setup ends


class _SetupWatch:
    """Counts nodes whose setup succeeded, and on clusters of up to PER_NODE_LINES nodes gives
    each a ✓/✗ line with its duration as it ends. On bigger ones a line per node would bury
    the rest of the output, so only the count moves, and only failures get a line: they need
    action. A failed node is not counted, so the step never shows complete (✓ n/n) when it
    was not. Nodes whose setup was unchanged are counted without a line (nothing ran there)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._total = total
        self._seen: set[str] = set()
        self._succeeded = 0
        self._lock = threading.Lock()  # finished() comes from the nodes' worker threads
        progress.count(SETUP_STEP, 0, total, "nodes")

    def finished(self, ended: CommandResult, *, skipped: bool = False) -> None:
        """Once per node (later calls for it are ignored)."""
        node = ended.node
        with self._lock:
            if node in self._seen:
                return
            self._seen.add(node)
            took = ended.duration
            if not ended.ok:
                self._progress.note(f"  ✗ {node} setup failed: {ended.describe()} ({took:.1f}s)")
                return
            if not skipped and self._total <= PER_NODE_LINES:
                self._progress.note(f"  ✓ {node} setup ({took:.1f}s)")
            self._succeeded += 1
            self._progress.count(SETUP_STEP, self._succeeded, self._total, "nodes")
