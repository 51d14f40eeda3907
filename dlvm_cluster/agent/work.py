"""What the agent (agent/server.py) does for a request, once accepted: run commands on nodes,
or push the cluster's files, over the connections it holds, streaming to its client.

The agent itself only accepts, refuses and keeps count; each request kind here is a Work:
given the nodes, the client and a cancellation, it does the job and returns what to log and
the last message for the client.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable
from typing import Any

from dlvm_cluster.errors import DlvmError, RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.orchestrate.cluster.files import push_files as push
from dlvm_cluster.orchestrate.cluster.records import applied_spec
from dlvm_cluster.progress import TerraformEvent
from dlvm_cluster.remote.agent_client import Messages, encode, error_message
from dlvm_cluster.remote.fanout import Cancellation, run_on_nodes
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.sync import SyncCancelled
from dlvm_cluster.state import ClusterState

Outcome = tuple[str, dict[str, Any]]  # what the log says, and the last message to the client


class Client:
    """The connection of one client: messages out (from many node threads), cancel in."""

    def __init__(self, sock: socket.socket, cancel: Cancellation) -> None:
        self.sock = sock
        self.cancel = cancel
        self._lock = threading.Lock()
        self._gone = False

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._gone:
                return
            try:
                self.sock.sendall(encode(message))
            except OSError:
                self._gone = True
                self.cancel.set("interrupted")

    def line(self, node: Node, stream: str, text: str) -> None:
        self.send({"node": node.name, "stream": stream, "text": text})

    def watch(self, messages: Messages) -> None:
        """Until the client closes: a cancel message, or the client going away, cancels."""
        with contextlib.suppress(OSError, ValueError):
            while True:
                message = messages.next()
                if message is None:
                    break
                if message.get("op") == "cancel":
                    break
        self.cancel.set("interrupted")


Work = Callable[[list[Node], Client, Cancellation], Outcome]


def run_commands(pool: SshPool, request: dict[str, Any]) -> Work | None:
    """commands[i] on nodes[i] through remote.fanout, output streamed to the client, as over
    new connections, each reading the request's stdin if it has one. None: a malformed
    request."""
    names, commands = request.get("nodes"), request.get("commands")
    if not (
        isinstance(names, list)
        and isinstance(commands, list)
        and len(names) == len(commands)
        and all(isinstance(c, str) for c in commands)
    ):
        return None
    try:
        stdin = _stdin(request.get("stdin"))
    except ValueError:
        return None
    by_name = dict(zip(names, commands, strict=True))
    timeout = request.get("timeout")

    def work(nodes: list[Node], client: Client, cancel: Cancellation) -> Outcome:
        result = run_on_nodes(
            pool,
            nodes,
            lambda node: by_name[node.name],
            sink=client.line,
            timeout=None if timeout is None else float(timeout),
            fail_fast=bool(request.get("fail_fast", False)),
            cancel=cancel,
            stdin=stdin,
        )
        summary = f"ran on {len(nodes)} node(s): {len(result.failed)} failed"
        return summary, {"results": result.to_json()}

    return work


def push_files(pool: SshPool, state: ClusterState, request: dict[str, Any]) -> Work:
    """The cluster's files (its applied spec, read afresh) pushed to nodes, as `dlvm sync`
    does over new connections; progress and the result go to the client."""

    def work(nodes: list[Node], client: Client, cancel: Cancellation) -> Outcome:
        try:
            results = push(
                pool,
                applied_spec(state),
                nodes,
                ClientProgress(client),
                delete=bool(request.get("delete", False)),
                cancelled=cancel.is_set,
                delete_at_most=_at_most(request.get("delete_at_most")),
            )
        except SyncCancelled:
            return f"sync to {len(nodes)} node(s)", {"cancelled": True}
        except DlvmError as error:
            return f"sync to {len(nodes)} node(s) failed: {error.message}", error_message(error)
        except OSError as exc:  # reading the local files (a source gone, unreadable)
            unreadable = RemoteError(f"sync failed: {exc}", hint="check the spec's files entries")
            return f"sync to {len(nodes)} node(s) failed: {exc}", error_message(unreadable)
        return f"synced {len(nodes)} node(s)", {
            "synced": [dataclasses.asdict(result) for result in results]
        }

    return work


class ClientProgress:
    """A Progress that forwards to the client, which shows it as its own."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def stage(self, text: str) -> None:
        self.client.send({"stage": text})

    def note(self, text: str) -> None:
        self.client.send({"note": text})

    def terraform(self, event: TerraformEvent) -> None:
        return None  # the agent never runs Terraform

    def line(self, node: Node, stream: str, text: str) -> None:
        self.client.line(node, stream, text)

    def count(self, step: str, done: int, total: int, unit: str = "") -> None:
        self.client.send({"count": [step, done, total, unit]})


def _stdin(value: object) -> bytes | None:
    """A request's stdin (base64; null: none); ValueError when it is neither."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("stdin is not base64 text")
    return base64.b64decode(value, validate=True)


def _at_most(value: object) -> int | None:
    """A request's limit on deletions: a whole number, else none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
