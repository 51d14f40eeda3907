"""The ssh provider: machines that already exist become an Inventory, with no Terraform.

Host keys come from the cluster file when given; otherwise they are read from the machines on
the first `up`, shown to the user, and pinned from then on (a changed key is refused later).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.spec.model import ClusterSpec, SshProvider

KeyScan = Callable[[str, int], str]  # (host, port) -> "type base64"


def adopt_hosts(
    spec: ClusterSpec, pinned: Mapping[tuple[str, int], str], scan: KeyScan
) -> tuple[Inventory, list[Node]]:
    """The inventory of the spec's hosts, and the nodes whose keys were newly scanned."""
    provider = spec.provider
    assert isinstance(provider, SshProvider)
    nodes = []
    scanned = []
    for rank, host in enumerate(provider.hosts[: spec.nodes.count]):
        key = host.host_key or pinned.get((host.host, host.port))
        fresh = key is None
        if key is None:
            key = scan(host.host, host.port)
        node = Node(
            name=f"node-{rank}",
            rank=rank,
            ip=host.host,
            port=host.port,
            user=host.user,
            host_key=" ".join(key.split()[:2]),
        )
        nodes.append(node)
        if fresh:
            scanned.append(node)
    gpus = spec.nodes.accelerator.count if spec.nodes.accelerator else 0
    inventory = Inventory(
        cluster=spec.name,
        nodes=tuple(nodes),
        env={},
        gpus_per_node=gpus,
        identity_file=provider.identity_file or "~/.ssh/id_ed25519",
    )
    return inventory, scanned


def pinned_keys(inventory: Inventory | None) -> dict[tuple[str, int], str]:
    if inventory is None:
        return {}
    return {(node.ip, node.port): node.host_key for node in inventory.nodes}
