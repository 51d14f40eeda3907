"""The environment every setup, exec and job process gets (a contract, in the README)."""

from __future__ import annotations

from collections.abc import Mapping

from dlvm_cluster.inventory import Inventory, Node


def node_environment(
    inventory: Inventory, node: Node, spec_env: Mapping[str, str]
) -> dict[str, str]:
    """Provider env, then the spec's env, then the DLVM_* variables (which nothing overrides):
    DLVM_CHECKPOINT_DIR only where the spec names storage."""
    env = dict(inventory.env)
    env.update(spec_env)
    env.update(
        {
            "DLVM_CLUSTER": inventory.cluster,
            "DLVM_NODE_RANK": str(node.rank),
            "DLVM_NUM_NODES": str(len(inventory.nodes)),
            "DLVM_NODE_IPS": "\n".join(n.ip for n in inventory.nodes),
            "DLVM_HEAD_IP": inventory.head.ip,
            "DLVM_GPUS_PER_NODE": str(inventory.gpus_per_node),
        }
    )
    if inventory.checkpoint_dir:
        env["DLVM_CHECKPOINT_DIR"] = inventory.checkpoint_dir
    return env
