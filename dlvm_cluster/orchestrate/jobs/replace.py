"""Replacing a job's lost nodes while it runs: the provider remakes their machines alone,
and they are set up as `up` sets up new nodes, then given what the job's own spec adds
(secrets, files); retried with backoff until it works or the job is cancelled. The
supervisor (supervise.py) decides when, and says each step as an event of the job."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from dlvm_cluster import secret_env
from dlvm_cluster.errors import DlvmError, UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.files import install_secrets, push_files
from dlvm_cluster.orchestrate.cluster.prepare import converge_request, prepare_nodes, with_storage
from dlvm_cluster.progress import Progress
from dlvm_cluster.spec.model import LoadedSpec

REPLACE_BACKOFF = (5.0, 15.0, 30.0, 60.0, 120.0)  # seconds before each new try to replace
CANCEL_STEP = 0.5  # seconds between looks at the cancel request while waiting to try again

Say = Callable[[str], None]


def replace_lost(
    cluster: Cluster,
    loaded: LoadedSpec,
    names: list[str],
    progress: Progress,
    *,
    event: Say,
    check_cancel: Callable[[], None],
) -> None:
    """Replace the lost nodes `names` alone and set them up for the job (`loaded`: its
    spec); retried with backoff until it works or `check_cancel` raises (a request the
    provider refuses outright, a UsageError, fails the job)."""
    applied = cluster.require_applied()
    cluster.forget_records()
    provider = cluster.provider
    old_ids = {
        node.name: provider.provider_id(node)
        for node in cluster.require_inventory().nodes
        if node.name in names
    }
    for attempt in itertools.count(1):
        check_cancel()
        try:
            with cluster.lock("recover"):
                replace_machines(cluster, applied, names, old_ids, progress, event)
                _set_up(cluster, applied, loaded, names, progress)
            event(f"setup done on {', '.join(names)}")
            return
        except UsageError:
            raise
        except DlvmError as exc:
            delay = REPLACE_BACKOFF[min(attempt, len(REPLACE_BACKOFF)) - 1]
            event(
                f"replacing {', '.join(names)} failed (try {attempt}): {exc}; "
                f"trying again in {delay:g}s"
            )
            _sleep(delay, check_cancel)


def replace_machines(
    cluster: Cluster,
    applied: LoadedSpec,
    names: list[str],
    old_ids: dict[str, str],
    progress: Progress,
    event: Say,
) -> Inventory:
    """The provider remakes the named nodes' machines alone; the new inventory, recorded."""
    provider = cluster.provider
    request = converge_request(cluster, applied, progress)
    inventory = with_storage(provider.replace_nodes(request, names), applied.spec)
    cluster.save_inventory(inventory)
    for node in inventory.nodes:
        if node.name in names:
            event(
                f"node replaced: {node.name} {old_ids.get(node.name, '?')} -> "
                f"{provider.provider_id(node)} (host key {node.host_key_fingerprint})"
            )
    return inventory


def _set_up(
    cluster: Cluster, applied: LoadedSpec, loaded: LoadedSpec, names: list[str], progress: Progress
) -> None:
    """Keys, mesh, secrets, storage, files and setup on the new nodes, as `up` does."""
    new = [node for node in cluster.require_inventory().nodes if node.name in names]
    scaled = cluster.scaled_count() is not None
    prepare_nodes(cluster, applied, progress, nodes=new, scaled=scaled)
    # the job's own spec may name more secrets and files than the applied one
    pool = cluster.pool()
    install_secrets(pool, cluster.state, new, secret_env.resolve(loaded.spec))
    if loaded.spec.files:
        push_files(pool, loaded, new, progress)


def _sleep(seconds: float, check_cancel: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check_cancel()
        time.sleep(min(CANCEL_STEP, max(0.0, deadline - time.monotonic())))
