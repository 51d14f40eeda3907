"""Nodes' SSH host keys, read from the Compute Engine API: pinned before the first connection.

With `enable-guest-attributes=TRUE` set before first boot, the guest agent generates the host
keys and publishes each under guest attributes `hostkeys/<type>` (value: the base64 blob). The
API is authenticated and the values come from the VM itself, so no trust on first use is needed.
Publishing takes until the guest agent runs, hence the retries; the API allows about 10 reads
per VM per minute, hence the interval.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.tfvars import instance_name
from dlvm_cluster.providers.terraformed import poll_host_keys

QUERY_PATH = "hostkeys/"
# Best first; the agent publishes ecdsa, ed25519 and rsa by default.
PREFERRED_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")
ATTEMPTS = 30
INTERVAL = 10.0


@dataclass(frozen=True)
class NodeRef:
    """Where a node's VM is: what the API needs to ask about it."""

    name: str  # node name (node-0)
    instance: str  # VM name (<cluster>-node-0)
    zone: str


def node_refs(outputs: Mapping[str, Any]) -> list[NodeRef]:
    """The nodes of terraform/gcp's `nodes` output, in rank order."""
    raw = outputs.get("nodes")
    if not isinstance(raw, Mapping):
        raise ProvisionError(
            "Terraform produced no `nodes` output",
            hint="the module in the state dir may have been edited; run `dlvm up` again",
        )
    items = sorted(raw.items(), key=lambda item: int(item[1]["rank"]))
    return [
        NodeRef(name=name, instance=str(item["instance"]), zone=str(item["zone"]).rsplit("/")[-1])
        for name, item in items
    ]


def node_refs_for(cluster: str, zone: str, names: Iterable[str]) -> list[NodeRef]:
    """NodeRefs from what the state dir knows (inventory names, tfvars zone), for `status`."""
    return [NodeRef(name, instance_name(cluster, name), zone) for name in names]


def read_host_keys(
    clients: ComputeClients,
    project: str,
    nodes: Sequence[NodeRef],
    *,
    attempts: int = ATTEMPTS,
    interval: float = INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """node name -> "TYPE BASE64" for every node, waiting until each VM has published its keys."""
    keys, pending = poll_host_keys(
        {node.name: node for node in nodes},
        lambda node: fetch_host_key(clients, project, node),
        attempts=attempts,
        interval=interval,
        sleep=sleep,
    )
    if not pending:
        return keys
    raise ProvisionError(
        f"{', '.join(pending)} published no SSH host key after {attempts * interval:.0f}s",
        hint="the node may still be booting (run `dlvm up` again) or its image has no guest "
        "agent; `dlvm up` recreates nodes that stay unreachable",
    )


def fetch_host_key(clients: ComputeClients, project: str, node: NodeRef) -> str | None:
    """The node's preferred host key, or None while the VM has not published one yet."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    request = compute_v1.GetGuestAttributesInstanceRequest(
        project=project, zone=node.zone, instance=node.instance, query_path=QUERY_PATH
    )
    try:
        attributes = call_api(
            f"host keys of {node.instance}",
            project,
            lambda: clients.instances.get_guest_attributes(
                request=request, timeout=REQUEST_TIMEOUT
            ),
        )
    except exceptions.NotFound:
        return None
    published = {
        str(item.key): str(item.value)
        for item in attributes.query_value.items
        if _valid_blob(str(item.value))
    }
    for key_type in PREFERRED_TYPES:
        if key_type in published:
            return f"{key_type} {published[key_type]}"
    return None


def _valid_blob(value: str) -> bool:
    try:
        return bool(value) and len(base64.b64decode(value, validate=True)) > 0
    except (binascii.Error, ValueError):
        return False
