"""Intra-cluster SSH: every node reaches every other by address and by name (node-0, ...),
without a password and with pinned host keys, as horovodrun, deepspeed's pdsh launcher and
mpirun expect."""

from __future__ import annotations

import io
import shlex
import tarfile
from collections.abc import Sequence

from dlvm_cluster.inventory import NODE_FILES, Inventory, Node, node_dir
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.shell import quote_path


def key_file_name(cluster: str) -> str:
    return f"dlvm_{cluster}_ed25519"


def known_hosts_block(inventory: Inventory) -> str:
    """Each node's key under its name, which ssh_config_block makes the HostKeyAlias (ssh
    looks an alias up as written, never as `[alias]:port`), and under its address as ssh
    names it without the config."""
    lines = [f"# dlvm {inventory.cluster} begin"]
    for node in inventory.checked().nodes:
        key_type, blob = node.host_key.split()[:2]
        lines.append(f"{node.name},{node.host_port} {key_type} {blob}")
    lines.append(f"# dlvm {inventory.cluster} end")
    return "\n".join(lines) + "\n"


def ssh_config_block(inventory: Inventory) -> str:
    lines = [f"# dlvm {inventory.cluster} begin"]
    for node in inventory.checked().nodes:
        lines += [
            f"Host {node.name} {node.ip}",
            f"    HostName {node.config_hostname}",
            f"    Port {node.port}",
            f"    User {node.user}",
            f"    IdentityFile ~/.ssh/{key_file_name(inventory.cluster)}",
            "    IdentitiesOnly yes",
            "    StrictHostKeyChecking yes",
            f"    HostKeyAlias {node.name}",
            "    KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            "    BatchMode yes",
        ]
    lines.append(f"# dlvm {inventory.cluster} end")
    return "\n".join(lines) + "\n"


def _payload(inventory: Inventory, private_key: bytes, public_key: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (
            ("key", private_key),
            ("known_hosts", known_hosts_block(inventory).encode()),
            ("config", ssh_config_block(inventory).encode()),
            ("authorized", public_key.strip().encode() + b"\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def install_script(cluster: str) -> str:
    """Replaces this cluster's block in ~/.ssh/known_hosts and ~/.ssh/config, idempotently."""
    begin, end = f"# dlvm {cluster} begin", f"# dlvm {cluster} end"
    return (
        "set -e; umask 077; mkdir -p ~/.ssh; t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT; "
        'tar -x -C "$t" -f -; '
        f'install -m 600 "$t/key" ~/.ssh/{key_file_name(cluster)}; '
        "for f in known_hosts config; do touch ~/.ssh/$f; "
        f"sed -i '/^{begin}$/,/^{end}$/d' ~/.ssh/$f; "
        'cat "$t/$f" >> ~/.ssh/$f; chmod 600 ~/.ssh/$f; done; '
        'touch ~/.ssh/authorized_keys; grep -qxF "$(cat "$t/authorized")" ~/.ssh/authorized_keys '
        '|| cat "$t/authorized" >> ~/.ssh/authorized_keys'
    )


def uninstall_script(cluster: str) -> str:
    """Removes what install_script added, and the cluster's folder: for machines dlvm did not
    create (ssh provider), which other clusters may share."""
    begin, end = f"# dlvm {cluster} begin", f"# dlvm {cluster} end"
    return (
        f"rm -f ~/.ssh/{key_file_name(cluster)}; "
        "for f in known_hosts config; do [ -f ~/.ssh/$f ] && "
        f"sed -i '/^{begin}$/,/^{end}$/d' ~/.ssh/$f; done; "
        f"[ -f ~/.ssh/authorized_keys ] && sed -i '/ dlvm-{cluster}-internal$/d' "
        f"~/.ssh/authorized_keys; rm -rf {quote_path(node_dir(cluster))}; "
        # what releases before per-cluster folders left, shared and no longer read
        "rm -f ~/.dlvm/secrets.env ~/.dlvm/setup.sha256; "
        # the shared folders (~/.dlvm/node-files, ~/.dlvm) go only once they are empty
        f"(cd && rmdir -p {shlex.quote(NODE_FILES.removeprefix('~/'))} 2>/dev/null); true"
    )


def install_mesh(
    pool: SshPool,
    inventory: Inventory,
    nodes: Sequence[Node],
    *,
    private_key: bytes,
    public_key: str,
) -> None:
    """Give `nodes` the internal key, authorize it, and pin the keys and names of every node."""
    payload = _payload(inventory, private_key, public_key)
    script = install_script(inventory.cluster)

    run_everywhere(pool, nodes, script, payload, "cannot set up intra-cluster SSH")


def uninstall_mesh(pool: SshPool, nodes: Sequence[Node], cluster: str) -> None:
    run_everywhere(pool, nodes, uninstall_script(cluster), b"", "cannot clean up")
