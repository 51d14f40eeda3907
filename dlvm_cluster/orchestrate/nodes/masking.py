"""Masking secrets in node output with the values the nodes hold, not only those known here.

A `from_env` secret's value is known on this machine only while its variable is set in the
user's shell; the nodes keep the value `up` installed, whatever that shell holds now (unset,
or another value since). Masking with the local values alone printed the nodes' value in the
clear. The sound choices were:

- mask with what the nodes hold: read it from each node before its output is shown, over the
  same connections (or agent) the command then uses. The nodes' values are the truth: they
  are what the commands see, so they are what output can contain;
- refuse to show node output while a secret cannot be resolved here: safe, but `exec` and
  `logs` would then need every secret exported in every shell, for no gain in safety;
- keep a local record: a hash cannot find a value inside a line, and a copy of the value
  would be a second secrets store on this machine.

So the first: before node output is printed, each node prints (in hex, so every value reads
back exactly) the values its secrets file gives, through the same wrapping every command
gets; output is masked with those and the ones resolved here. A node whose values cannot be
read is not run, and says why: its output could not be masked. The read's output is never
shown or logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dlvm_cluster import secret_env
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.remote.command import held_secrets, wrap
from dlvm_cluster.remote.results import CommandResult, GroupResult, LineSink

Batch = Callable[[Sequence[Node], Sequence[str], LineSink], GroupResult | None]
"""Runs commands[i] on nodes[i], each output line to the sink, unlogged and unmasked;
None: it could not be run (an agent that refused), and nothing was started."""


@dataclass(frozen=True)
class Masking:
    """What masks node output, and the nodes whose secrets could not be read (with why)."""

    redact: Callable[[str], str]
    unreadable: Mapping[str, str] = field(default_factory=dict)

    def runnable(self, nodes: Sequence[Node]) -> tuple[Node, ...]:
        return tuple(node for node in nodes if node.name not in self.unreadable)

    def merge(self, nodes: Sequence[Node], ran: GroupResult) -> GroupResult:
        """The results of the nodes that ran, and of those that did not, in node order."""
        by_name = {result.node: result for result in ran.results}
        results = []
        for node in nodes:
            result = by_name.get(node.name)
            if result is None:
                why = self.unreadable.get(node.name, "")
                result = CommandResult(
                    node=node.name,
                    rank=node.rank,
                    error=f"not run: the secrets it holds could not be read to mask them in "
                    f"its output ({why})",
                )
            results.append(result)
        return GroupResult(results=tuple(results), first_failed=ran.first_failed)


def read_masking(
    inventory: Inventory,
    nodes: Sequence[Node],
    names: Sequence[str],
    local: Mapping[str, str],
    run: Batch,
) -> Masking | None:
    """The masking for output of `nodes`: the secrets `names` as each node holds them, and
    the `local` values. None: `run` could not run the read (nothing was started)."""
    if not names or not nodes:
        return Masking(redact=secret_env.redactor(local))
    lines: dict[str, list[str]] = {node.name: [] for node in nodes}
    lock = threading.Lock()

    def collect(node: Node, stream: str, text: str) -> None:
        if stream == "out":
            with lock:
                lines[node.name].append(text)

    read = wrap(held_secrets(inventory.cluster, names), {}, cluster=inventory.cluster)
    result = run(nodes, [read] * len(nodes), collect)
    if result is None:
        return None
    values = dict(local)
    unreadable = {}
    for ended in result.results:
        held = _decode(lines.get(ended.node, []), names) if ended.ok else None
        if held is None:
            unreadable[ended.node] = ended.describe() if not ended.ok else "unexpected output"
            continue
        values.update({f"{name}@{ended.node}": value for name, value in held.items()})
    return Masking(redact=secret_env.redactor(values), unreadable=unreadable)


def _decode(lines: Sequence[str], names: Sequence[str]) -> dict[str, str] | None:
    """name -> value from the read's last lines (one hex line per name: what a login script
    printed comes before them); None if they are not that."""
    if len(lines) < len(names):
        return None
    held = {}
    for name, line in zip(names, lines[len(lines) - len(names) :], strict=True):
        try:
            value = bytes.fromhex(line.strip()).decode("utf-8", errors="replace")
        except ValueError:
            return None
        if value:
            held[name] = value
    return held
