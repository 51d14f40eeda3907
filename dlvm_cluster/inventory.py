"""The inventory: the nodes of a cluster as remote execution sees them.

It is made from the provider's outputs (Terraform's `nodes` output, or the ssh provider's
host list) and is all that remote execution and launchers know of a cluster.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.errors import ProvisionError, StateError, UsageError

# Compute Engine's rule for resource names, which cluster names become (with max 40 characters,
# checked by the spec); the inventory checks it again before writing names into ssh files.
CLUSTER_NAME_PATTERN = r"[a-z]([-a-z0-9]*[a-z0-9])?"
# Host key types a node may present (OpenSSH's host key algorithms that paramiko verifies).
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")
_SCOPE_ID = re.compile(r"[A-Za-z0-9._-]+")
# POSIX's portable user name: the portable filename characters, not starting with a hyphen;
# at most 32 characters, Linux's useradd limit.
_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}")
_NODE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def host_problem(host: str) -> str:
    """Why `host` is neither an IP address nor a DNS name ("" when it is one). Host names are
    written into ssh configs and known_hosts files, where a space or a newline would start a
    new option, and onto ssh command lines, where a leading `-` would be an option."""
    if not host or _CONTROL.search(host) or any(char.isspace() for char in host):
        return "must be an IP address or a DNS name, without spaces or control characters"
    address, _, scope = host.partition("%")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        if "%" not in host or _SCOPE_ID.fullmatch(scope):  # fe80::1%eth0; not fe80::1%
            return ""
    if len(host) <= 253 and _DNS_NAME.fullmatch(host):
        return ""
    return "must be an IP address or a DNS name (letters, digits, - and ., not starting with -)"


def user_problem(user: str) -> str:
    """Why `user` is not a POSIX user name ("" when it is one)."""
    if _USER_NAME.fullmatch(user):
        return ""
    return "must be a user name: up to 32 letters, digits, '.', '_' or '-', not starting with '-'"


def host_key_problem(key: str) -> str:
    """Why `key` is not a public host key "TYPE BASE64 [comment]" ("" when it is one): a known
    type, and base64 whose decoded blob names that same type, as OpenSSH's key blobs do."""
    if _CONTROL.search(key.replace("\t", " ")):
        return "must not hold control characters"
    parts = key.split()
    if len(parts) < 2:
        return 'must be "TYPE BASE64", as in the .pub file of the host key'
    key_type, blob = parts[:2]
    if key_type not in HOST_KEY_TYPES:
        return f"{key_type!r} is not a host key type (known: {', '.join(HOST_KEY_TYPES)})"
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key after the type is not valid base64"
    length = int.from_bytes(data[:4], "big")
    if len(data) < 4 + length or data[4 : 4 + length] != key_type.encode():
        return f"the base64 data is not a {key_type} key"
    return ""


def proxy_problem(proxy: tuple[str, ...]) -> str:
    """Why `proxy` is not a command line fit for an ssh config ("" when it is one): it is run
    on this machine, so each argument is one line, and the program a plain name or path."""
    if not proxy:
        return ""
    if any(not isinstance(arg, str) or _CONTROL.search(arg) for arg in proxy):
        return "must be a list of arguments without control characters"
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", proxy[0]) or proxy[0].startswith("-"):
        return "must start with a program name or path"
    return ""


def unsafe_for_ssh_files(text: str) -> bool:
    """Whether `text` holds what would break out of one line of an ssh config or known_hosts
    file (a control character: a newline, a carriage return, ...)."""
    return bool(_CONTROL.search(text))


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
    # The command that carries the SSH connection, speaking on its stdin and stdout (an ssh
    # ProxyCommand), as its argument list; empty: connect to ip:port directly.
    proxy: tuple[str, ...] = ()

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint(self.host_key)

    @property
    def proxy_command(self) -> str:
        """The proxy as one ssh_config ProxyCommand line: each argument shell-quoted, `%`
        doubled (ssh expands %-tokens there); "" when the node is reached directly."""
        return shlex.join(self.proxy).replace("%", "%%") if self.proxy else ""

    @property
    def config_hostname(self) -> str:
        """The address as an ssh config's HostName: `%` starts a token there (an IPv6 scope
        like fe80::1%eth0 must be written %%eth0)."""
        return self.ip.replace("%", "%%")

    def known_hosts_line(self) -> str:
        key_type, blob = self.checked().host_key.split()[:2]
        return f"{self.host_port} {key_type} {blob}"

    @property
    def host_port(self) -> str:
        """How OpenSSH names this node in known_hosts: the address, with the port unless 22."""
        return self.ip if self.port == 22 else f"[{self.ip}]:{self.port}"

    def checked(self) -> Node:
        """This node, if every field is fit to be written into an ssh config, a known_hosts
        file or an ssh command line; a second line of defence behind the spec's validation,
        for an inventory that did not come from a checked spec (a provider's output, a state
        file edited by hand)."""
        problems = [
            ("name", "" if _NODE_NAME.fullmatch(self.name) else "must be like node-0"),
            ("ip", host_problem(self.ip)),
            ("user", user_problem(self.user)),
            ("host_key", host_key_problem(self.host_key)),
            ("proxy", proxy_problem(self.proxy)),
        ]
        for field_name, problem in problems:
            if problem:
                value = getattr(self, field_name)
                raise StateError(
                    f"node {self.name!r}: its {field_name} {value!r} {problem}; refusing to "
                    "write it into ssh files",
                    hint="the cluster's inventory holds a value no cluster file can give; "
                    "run `dlvm up FILE` again to rebuild it",
                )
        if not 0 < self.port < 65536:
            raise StateError(
                f"node {self.name!r}: port {self.port} is not a TCP port",
                hint="run `dlvm up FILE` again to rebuild the inventory",
            )
        return self


@dataclass(frozen=True)
class Inventory:
    cluster: str
    nodes: tuple[Node, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # the provider's, e.g. PATH
    gpus_per_node: int = 0
    identity_file: str = ""  # the user's key (ssh provider); empty: the cluster's own key
    # Where every node mounts the spec's checkpoint storage (DLVM_CHECKPOINT_DIR); empty: none.
    checkpoint_dir: str = ""

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
                    f"node selector {part!r} is neither a rank, a range like 2-3, nor a node name",
                    hint="nodes: " + ", ".join(by_name),
                )
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if high < low:
                raise UsageError(
                    f"node selector {part!r} is an empty range",
                    hint=f"write the lower rank first, like {high}-{low}",
                )
            for rank in range(low, high + 1):
                if rank not in by_rank:
                    raise UsageError(
                        f"node selector {selector!r}: there is no node of rank {rank}",
                        hint=f"ranks are 0-{len(self.nodes) - 1}",
                    )
                chosen[rank] = by_rank[rank]
        return tuple(chosen[rank] for rank in sorted(chosen))

    def known_hosts(self) -> str:
        return "".join(node.known_hosts_line() + "\n" for node in self.checked().nodes)

    def checked(self) -> Inventory:
        """This inventory, if its cluster name, identity file and nodes (Node.checked) are fit
        to be written into ssh configs and known_hosts files."""
        hint = "run `dlvm up FILE` again to rebuild the inventory"
        if not re.fullmatch(CLUSTER_NAME_PATTERN, self.cluster):
            raise StateError(
                f"the inventory names the cluster {self.cluster!r}, which no cluster file can",
                hint=f"`dlvm down {self.cluster}` removes it; make it again under a name of "
                "lower-case letters, digits and '-' that ends in a letter or digit",
            )
        if unsafe_for_ssh_files(self.identity_file):
            raise StateError(
                f"the identity file {self.identity_file!r} holds control characters; refusing "
                "to write it into ssh files",
                hint=hint,
            )
        for node in self.nodes:
            node.checked()
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "env": dict(self.env),
            "gpus_per_node": self.gpus_per_node,
            "identity_file": self.identity_file,
            "checkpoint_dir": self.checkpoint_dir,
            "nodes": [node.__dict__ for node in self.nodes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inventory:
        nodes = tuple(
            Node(**{**node, "proxy": tuple(node.get("proxy", ()))}) for node in data["nodes"]
        )
        return cls(
            cluster=data["cluster"],
            nodes=nodes,
            env=dict(data.get("env", {})),
            gpus_per_node=int(data.get("gpus_per_node", 0)),
            identity_file=str(data.get("identity_file", "")),
            checkpoint_dir=str(data.get("checkpoint_dir", "")),
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
