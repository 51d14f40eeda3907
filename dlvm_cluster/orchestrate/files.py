"""Push the spec's files to nodes (delta), pull results back, and run setup once per node."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster import secret_env
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import INSTALL_SECRETS, wrap
from dlvm_cluster.remote.fanout import run_on_nodes
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.remote.sync import SyncResult, pull, push
from dlvm_cluster.spec.load import resolve_source
from dlvm_cluster.spec.model import LoadedSpec

SETUP_STAMP = "~/.dlvm/setup.sha256"
SKIP_MARKER = "__dlvm_setup_unchanged__"


def push_files(
    pool: SshPool,
    loaded: LoadedSpec,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    delete: bool = False,
) -> list[SyncResult]:
    """Every `files` entry to every node; raises naming the nodes that failed."""
    results: list[SyncResult] = []
    for entry in loaded.spec.files:
        source = resolve_source(loaded, entry)
        progress.stage(f"sync {entry.src} -> {entry.dst}")
        batch = push(pool, nodes, source, entry.dst, exclude=entry.exclude, delete=delete)
        results.extend(batch)
        failed = [r for r in batch if not r.ok]
        if failed:
            raise RemoteError(
                "sync failed: " + "; ".join(r.error for r in failed),
                hint="check `dlvm status`; run the command again to resume",
            )
    return results


def pull_files(pool: SshPool, nodes: Sequence[Node], remote: str, local: Path) -> list[SyncResult]:
    results = pull(pool, nodes, remote, local)
    failed = [r for r in results if not r.ok]
    if failed:
        raise RemoteError("pull failed: " + "; ".join(r.error for r in failed))
    return results


def setup_digest(loaded: LoadedSpec, secret_values: Mapping[str, str]) -> str:
    """Changes when the setup text, the env, or a secret's value changes."""
    spec = loaded.spec
    payload = json.dumps(
        {"setup": spec.setup, "env": spec.plain_env(), "secrets": dict(secret_values)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def install_secrets(pool: SshPool, nodes: Sequence[Node], values: Mapping[str, str]) -> None:
    """(Re)write every node's secrets file through stdin: never on a command line."""
    content = secret_env.file_content(values) or b"\n"
    run_everywhere(pool, nodes, INSTALL_SECRETS, content, "cannot write the secrets file")


@dataclass(frozen=True)
class SetupReport:
    ran: tuple[str, ...]
    unchanged: tuple[str, ...]


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
    digest = setup_digest(loaded, values)
    check = "false" if rerun else f'[ "$(cat {SETUP_STAMP} 2>/dev/null)" = {digest} ]'
    command = (
        f"if {check}; then echo {SKIP_MARKER}; else "
        f"bash -e -c {shlex.quote(script)} && mkdir -p ~/.dlvm && echo {digest} > {SETUP_STAMP}; fi"
    )
    unchanged: set[str] = set()

    def sink(node: Node, stream: str, text: str) -> None:
        if text == SKIP_MARKER:
            unchanged.add(node.name)
        else:
            progress.line(node, stream, text)

    progress.stage("setup")
    result = run_on_nodes(
        pool,
        nodes,
        lambda node: wrap(command, node_environment(inventory, node, loaded.spec.plain_env())),
        sink=sink,
        redact=secret_env.redactor(values),
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
