"""The test harness shared by both tiers: the real `dlvm` command line with a private
DLVM_HOME, cluster files written for a test, and one way to wait for something to happen.

A plain module (`pythonpath = ["tests"]` in pyproject.toml puts it on the path), so test
files import it by name wherever they live; tests/conftest.py builds its fixtures from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.remote import agent_client, agent_process
from dlvm_cluster.state import ClusterState

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cli:
    """Runs the real `dlvm` command line in a subprocess with a private DLVM_HOME."""

    home: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "DLVM_HOME": str(self.home), "NO_COLOR": "1"}

    def run(
        self,
        *args: str,
        timeout: float = 300,
        check: bool = False,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`env` adds to the environment."""
        result = subprocess.run(
            [sys.executable, "-m", "dlvm_cluster", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env(), **(env or {})},
            input=input,
            cwd=REPO,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"dlvm {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    @contextlib.contextmanager
    def background(self, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
        """`dlvm ARGS` in the background (to interrupt or kill it), output captured; `env`
        adds to the environment. Killed on the way out if the test left it running."""
        process = subprocess.Popen(
            [sys.executable, "-m", "dlvm_cluster", *args],
            env={**self.env(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()

    def status(self, cluster: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            self.run("status", cluster, "--json", check=True).stdout
        )
        return data


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def write_spec(directory: Path, name: str, count: int, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: {count}}}\n{extra}")
    return path


def write_ssh_spec_on(cli: Cli, base: str, directory: Path, name: str, extra: str = "") -> Path:
    """An ssh-provider cluster file `name` whose hosts are the nodes of the local cluster
    `base` (reached as root with that cluster's key), with `extra` appended."""
    machines = cli.status(base)["nodes"]
    key = cli.home / "clusters" / base / "ssh" / "id_ed25519"
    hosts = "".join(
        f"    - {{host: {m['ip']}, user: root}}\n"  # type: ignore[index]
        for m in machines  # type: ignore[attr-defined]
    )
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nprovider:\n  kind: ssh\n  identity_file: {key}\n  hosts:\n{hosts}"
        f"nodes: {{count: {len(machines)}}}\n{extra}"  # type: ignore[arg-type]
    )
    return path


def write_unreachable_ssh_spec(directory: Path) -> Path:
    """An ssh-provider cluster file whose one host does not answer (port 9 on loopback)."""
    key = directory / "key"
    key.write_text("not a key")
    spec = directory / "unreachable.yaml"
    spec.write_text(
        "name: gone\nprovider:\n  kind: ssh\n"
        f"  identity_file: {key}\n  hosts:\n    - {{host: 127.0.0.1, port: 9}}\n"
        "nodes: {count: 1}\n"
    )
    return spec


def openssh_private_key() -> str:
    """A freshly generated ed25519 private key in OpenSSH's PEM form: a multi-line secret of the
    real shape, made at run time so that no key is ever kept in the repository."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.1,
    message: str | Callable[[], str] = "timed out",
) -> T:
    """Polls `condition` every `interval` seconds until it returns something truthy, and
    returns that. After `timeout` seconds the test fails with `message` (a callable is asked
    only then, so that it can show the state of that moment, such as a log)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"{said} (waited {timeout:g} s)")
        time.sleep(interval)
    return value


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): a node that never answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQe0b1bHqvFXaP0Yb3dXvN7jSRAi3lDRsQFZ3tjv7bC"
"""A well-formed host key that no machine holds."""


def unreachable_cluster(state: ClusterState) -> ClusterState:
    """`state` made (keys included) with one node that never answers: enough for an agent."""
    state.create()
    state.ensure_key_pair()
    node = Node(
        name="node-0", rank=0, ip="127.0.0.1", port=closed_port(), user="u", host_key=HOST_KEY
    )
    state.write_json(state.inventory_path, Inventory(state.name, (node,)).to_json())
    return state


def start_agent(state: ClusterState) -> int:
    """Start the cluster's agent as `dlvm exec` does; its pid once it answers."""
    agent_process.spawn(state.root)
    answer = wait_until(
        lambda: agent_client.ping(state.root),
        30,
        interval=0.05,
        message=lambda: (state.root / agent_process.LOG_NAME).read_text(),
    )
    return int(answer["pid"])
