"""One SSH connection per node for the life of a dlvm command, opened concurrently and reused
by every phase (readiness, sync, setup, exec, a job's follow and its recovery); a node that
is replaced (a new address or host key) gets a new connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.remote.connection import (
    CONNECT_TIMEOUT,
    Connection,
    Credentials,
    HostKeyMismatch,
    paramiko,
)

if TYPE_CHECKING:
    from dlvm_cluster.remote.relay import AgentRelay

MAX_PARALLEL_CONNECTS = 64
HEALTH_TIMEOUT = 3.0  # a health check gives each node this long to answer SSH
T = TypeVar("T")


class SshPool:
    def __init__(
        self, inventory: Inventory, credentials: Credentials, relay: AgentRelay | None = None
    ) -> None:
        """`relay`: the cluster's agent, tried first for what it can carry (remote/relay.py):
        reaching nodes, `run_everywhere` and `fanout.run_on_nodes`."""
        self.inventory = inventory
        self.relay = relay
        self._credentials = credentials
        self._key: paramiko.PKey | None = None
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def _pkey(self) -> paramiko.PKey:
        with self._lock:
            if self._key is None:
                self._key = self._credentials.load()
            return self._key

    def get(self, node: Node, timeout: float = CONNECT_TIMEOUT) -> Connection:
        with self._lock:
            existing = self._connections.get(node.name)
        if existing is not None and existing.alive and existing.node == node:
            return existing
        if existing is not None:  # gone, or the node was replaced (a new address or key)
            existing.close()
        connection = Connection.open(node, self._pkey(), timeout=timeout)
        with self._lock:
            self._connections[node.name] = connection
        return connection

    def connect(
        self,
        nodes: Iterable[Node],
        timeout: float = CONNECT_TIMEOUT,
        on_ready: Callable[[Node], None] | None = None,
    ) -> dict[str, RemoteError]:
        """Open connections to `nodes` at once; returns the error of each node that failed.
        `on_ready(node)` is called from the connecting thread as each node answers, so a
        caller can show progress live rather than after the slowest node. Through a relay,
        a node the agent reaches counts as answering, and only the others are connected."""
        nodes = list(nodes)
        errors: dict[str, RemoteError] = {}
        if self.relay is not None:
            reached = self.relay.answering(self.inventory, nodes, timeout)
            if reached is not None:
                for node in nodes:
                    if node.name in reached and on_ready is not None:
                        on_ready(node)
                nodes = [node for node in nodes if node.name not in reached]

        def attempt(node: Node) -> None:
            try:
                self.get(node, timeout)
            except RemoteError as exc:
                errors[node.name] = exc
                return
            if on_ready is not None:
                on_ready(node)

        if nodes:
            with ThreadPoolExecutor(max_workers=min(len(nodes), MAX_PARALLEL_CONNECTS)) as pool:
                list(pool.map(attempt, nodes))
        return errors

    def wait_ready(
        self,
        nodes: Iterable[Node],
        deadline: float,
        *,
        on_ready: Callable[[Node], None] | None = None,
        on_pending: Callable[[Sequence[Node]], None] | None = None,
    ) -> None:
        """Retry until every node answers SSH with its pinned key, or name those that never did.
        `on_ready` is called once per node as it answers (from worker threads); `on_pending`
        with the nodes still waiting after each round that left some (from this thread)."""
        pending = list(nodes)
        errors: dict[str, RemoteError] = {}
        while pending:
            errors = self.connect(
                pending,
                timeout=min(CONNECT_TIMEOUT, max(1.0, deadline - time.monotonic())),
                on_ready=on_ready,
            )
            for error in errors.values():
                if isinstance(error, HostKeyMismatch):
                    raise error
            pending = [node for node in pending if node.name in errors]
            if not pending or time.monotonic() >= deadline:
                break
            if on_pending is not None:
                on_pending(pending)
            time.sleep(0.5)
        if pending:
            names = ", ".join(node.name for node in pending)
            detail = "; ".join(str(errors[node.name]) for node in pending[:3])
            raise RemoteError(
                f"node(s) never answered SSH: {names} ({detail})",
                hint="check `dlvm status`; `dlvm up` recreates nodes that are gone",
            )

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()

    def __enter__(self) -> SshPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def for_each_node(
    pool: SshPool,
    nodes: Sequence[Node],
    work: Callable[[Connection], T],
    on_error: Callable[[Node, str], T],
) -> list[T]:
    """Run `work` on every node's connection at once; a node's failure (turned into a value by
    `on_error`) does not stop the others. Ctrl-C closes every connection, ending transfers."""

    def one(node: Node) -> T:
        try:
            return work(pool.get(node))
        except RemoteError as exc:
            return on_error(node, str(exc))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return on_error(node, f"{node.name}: connection lost: {exc}")

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(nodes), MAX_PARALLEL_CONNECTS)) as executor:
        try:
            return list(executor.map(one, nodes))
        except KeyboardInterrupt:
            pool.close()
            raise


def run_everywhere(
    pool: SshPool,
    nodes: Sequence[Node],
    script: str,
    stdin: bytes,
    what: str,
    *,
    through_agent: bool = True,
) -> None:
    """Run `script` on every node with `stdin` (keys and secrets travel there, never on a
    command line); raise one error naming every node where it failed. Through the pool's
    relay when it takes the batch, unless `through_agent` is False (secret values, which
    never reach the agent)."""

    def one(connection: Connection) -> str:
        code, _, err = connection.run(script, stdin=stdin)
        return "" if code == 0 else f"{connection.node.name}: {err.strip()}"

    errors = None
    if pool.relay is not None and through_agent:
        errors = pool.relay.run_everywhere(pool.inventory, nodes, script, stdin)
    if errors is None:
        errors = [e for e in for_each_node(pool, nodes, one, lambda node, error: error) if e]
    if errors:
        raise RemoteError(
            f"{what}: " + "; ".join(errors), hint="check `dlvm status`, then run the command again"
        )
