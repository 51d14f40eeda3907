"""The cluster's agent as a command's way to its nodes: batches of commands run over the
connections the agent keeps warm (agent/server.py), so the command opens none of its own.

A pool given a relay (SshPool.relay) tries it first for what the agent's protocol can carry:
reaching nodes (`connect`, `wait_ready`: a node answers when the agent ran `true` on it),
short scripts with their stdin (`run_everywhere`), streamed commands (`run_on_nodes`), and
pushing the files of the applied spec (`sync`, which `up` asks right after recording it).
The relay takes a batch only when an agent answers and serves exactly the pool's inventory
(the digest of the inventory file, which must hold the very nodes asked for); in every other
case it answers None, having started nothing, and the pool connects as it would without one.
`up` uses it on a cluster whose spec did not change (orchestrate/cluster/lifecycle.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import agent_client
from dlvm_cluster.remote.results import GroupResult, LineSink, SyncResult, discard_line
from dlvm_cluster.state import ClusterState


class AgentRelay:
    """Runs batches through the agent of one cluster (see the module docstring)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.batches = 0  # batches the agent took

    def serving(self, inventory: Inventory, nodes: Sequence[Node]) -> str:
        """The digest to send when the agent may serve `nodes` of `inventory`: the inventory
        file holds exactly `inventory`, and every node is one of it as recorded (a node
        replaced since has another address or key); "" when not."""
        try:
            raw = self.state.inventory_path.read_bytes()
            recorded = Inventory.from_json(json.loads(raw))
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        if recorded != inventory or any(node not in recorded.nodes for node in nodes):
            return ""
        return agent_client.inventory_digest(raw)

    def run(
        self,
        inventory: Inventory,
        nodes: Sequence[Node],
        commands: Sequence[str],
        *,
        sink: LineSink = discard_line,
        timeout: float | None = None,
        fail_fast: bool = False,
        redact: Callable[[str], str] = str,
        stdin: bytes | None = None,
    ) -> GroupResult | None:
        """commands[i] on nodes[i] through the agent, as remote.fanout.run_on_nodes runs
        them; None: the agent did not take them (none, busy, another inventory), nothing ran."""
        if not nodes:
            return None
        digest = self.serving(inventory, nodes)
        if not digest:
            return None
        result = agent_client.run(
            self.state.root,
            digest,
            nodes,
            commands,
            sink=sink,
            timeout=timeout,
            fail_fast=fail_fast,
            redact=redact,
            stdin=stdin,
        )
        if result is not None:
            self.batches += 1
        return result

    def run_everywhere(
        self, inventory: Inventory, nodes: Sequence[Node], script: str, stdin: bytes
    ) -> list[str] | None:
        """`script` with `stdin` on every node: the failures as "NODE: what it said on
        stderr" (empty: it succeeded everywhere); None: the agent did not take it."""
        said: dict[str, list[str]] = {node.name: [] for node in nodes}

        def keep_errors(node: Node, stream: str, text: str) -> None:
            if stream == "err":
                said[node.name].append(text)

        result = self.run(inventory, nodes, [script] * len(nodes), sink=keep_errors, stdin=stdin)
        if result is None:
            return None
        return [f"{end.node}: {end.error or _lines(said[end.node])}" for end in result.failed]

    def sync(
        self, inventory: Inventory, nodes: Sequence[Node], progress: Progress
    ) -> list[SyncResult] | None:
        """The applied spec's files pushed to `nodes` by the agent (which reads that spec);
        None: the agent did not take it."""
        digest = self.serving(inventory, nodes) if nodes else ""
        if not digest:
            return None
        pushed = agent_client.sync(self.state.root, digest, nodes, progress, delete=False)
        if pushed is not None:
            self.batches += 1
        return pushed

    def answering(
        self, inventory: Inventory, nodes: Sequence[Node], timeout: float | None
    ) -> set[str] | None:
        """The names of `nodes` the agent reached (it ran `true` there); None: no agent took
        the question, so nothing is known."""
        result = self.run(inventory, nodes, ["true"] * len(nodes), timeout=timeout)
        if result is None:
            return None
        return {ran.node for ran in result.results if ran.ok}


def _lines(lines: list[str]) -> str:
    return "\n".join(lines).strip()
