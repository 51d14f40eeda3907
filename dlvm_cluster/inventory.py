"""The inventory: the nodes of a cluster as remote execution sees them.

It is made from the provider's outputs (Terraform's `nodes` output, or the ssh provider's
host list) and is all that remote execution and launchers know of a cluster.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.errors import ProvisionError, UsageError

NODE_FILES = "~/.dlvm/node-files"
_CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]*")


def node_dir(cluster: str) -> str:
    """Where dlvm keeps a cluster's files on each of its nodes (secrets, setup stamp, jobs),
    `~` being the login home. A folder of its own per cluster, because clusters may share a
    machine (ssh provider): none may overwrite another's files, and `down` removes only this.
    Not `clusters/`: an ssh host may be this very machine, whose DLVM_HOME keeps its state
    dirs there. A name that could leave the folder (`/`, `..`) is a caller's bug: the spec
    refuses it."""
    if not _CLUSTER_NAME.fullmatch(cluster):
        raise ValueError(f"bad cluster name {cluster!r}")
    return f"{NODE_FILES}/{cluster}"


def node_name(rank: int) -> str:
    """The name of the node of `rank`: node-0 is the head."""
    return f"node-{rank}"


def node_rank(name: str) -> int | None:
    """The rank in a node name (node-10 -> 10), None for another name."""
    prefix, _, tail = name.rpartition("-")
    return int(tail) if prefix == "node" and tail.isdigit() else None


@dataclass(frozen=True)
class Node:
    name: str
    rank: int
    ip: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA...", pinned at provisioning

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint(self.host_key)

    def known_hosts_line(self) -> str:
        host = self.ip if self.port == 22 else f"[{self.ip}]:{self.port}"
        key_type, blob = self.host_key.split()[:2]
        return f"{host} {key_type} {blob}"


@dataclass(frozen=True)
class Inventory:
    cluster: str
    nodes: tuple[Node, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # the provider's, e.g. PATH
    gpus_per_node: int = 0
    identity_file: str = ""  # the user's key (ssh provider); empty: the cluster's own key

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def select(self, selector: str | None) -> tuple[Node, ...]:
        """`0,2-3` by rank, or node names; None means every node."""
        if not selector:
            return self.nodes
        by_name = {node.name: node for node in self.nodes}
        by_rank = {node.rank: node for node in self.nodes}
        chosen: dict[int, Node] = {}
        for part in selector.split(","):
            part = part.strip()
            if part in by_name:
                chosen[by_name[part].rank] = by_name[part]
                continue
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise UsageError(
                    f"--nodes: {part!r} is neither a rank, a range like 2-3, nor a node name",
                    hint="nodes: " + ", ".join(by_name),
                )
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if high < low:
                raise UsageError(
                    f"--nodes: {part!r} is an empty range",
                    hint=f"write the lower rank first, like {high}-{low}",
                )
            for rank in range(low, high + 1):
                if rank not in by_rank:
                    raise UsageError(
                        f"--nodes: there is no node of rank {rank}",
                        hint=f"ranks are 0-{len(self.nodes) - 1}",
                    )
                chosen[rank] = by_rank[rank]
        return tuple(chosen[rank] for rank in sorted(chosen))

    def known_hosts(self) -> str:
        return "".join(node.known_hosts_line() + "\n" for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "env": dict(self.env),
            "gpus_per_node": self.gpus_per_node,
            "identity_file": self.identity_file,
            "nodes": [node.__dict__ for node in self.nodes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inventory:
        nodes = tuple(Node(**node) for node in data["nodes"])
        return cls(
            cluster=data["cluster"],
            nodes=nodes,
            env=dict(data.get("env", {})),
            gpus_per_node=int(data.get("gpus_per_node", 0)),
            identity_file=str(data.get("identity_file", "")),
        )


def from_terraform_outputs(
    cluster: str, outputs: Mapping[str, Any], *, env: Mapping[str, str], gpus_per_node: int
) -> Inventory:
    """Terraform's `nodes` output (name -> {rank, ip, port, user, host_key}) as an Inventory."""
    raw = outputs.get("nodes")
    if not isinstance(raw, Mapping):
        raise ProvisionError(
            "Terraform produced no `nodes` output",
            hint="the module in the state dir may have been edited; run `dlvm up` again",
        )
    nodes = []
    for name, item in raw.items():
        if not item.get("host_key"):
            raise ProvisionError(
                f"node {name} reported no SSH host key",
                hint="its provisioner did not finish; run `dlvm up` again to recreate it",
            )
        nodes.append(
            Node(
                name=name,
                rank=int(item["rank"]),
                ip=str(item["ip"]),
                port=int(item.get("port", 22)),
                user=str(item.get("user", "root")),
                host_key=" ".join(str(item["host_key"]).split()[:2]),
            )
        )
    nodes.sort(key=lambda node: node.rank)
    return Inventory(
        cluster=cluster, nodes=tuple(nodes), env=dict(env), gpus_per_node=gpus_per_node
    )


def fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line ("ssh-ed25519 AAAA...")."""
    blob = base64.b64decode(public_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"
