"""What providers may learn over SSH, handed to them by orchestrate (providers never connect):
which nodes answer with their pinned key, and the key a host presents on first contact."""

from __future__ import annotations

from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.records import open_pool
from dlvm_cluster.providers.base import Reach
from dlvm_cluster.state import ClusterState


def ssh_reach(state: ClusterState) -> Reach:
    def unreachable(inventory: Inventory) -> list[str]:
        from dlvm_cluster.remote.pool import HEALTH_TIMEOUT

        with open_pool(state, inventory) as pool:
            return sorted(pool.connect(inventory.nodes, timeout=HEALTH_TIMEOUT))

    def host_key(host: str, port: int) -> str:
        from dlvm_cluster.remote.connection import fetch_host_key

        return fetch_host_key(host, port, timeout=5)

    return Reach(unreachable=unreachable, host_key=host_key)
