"""What `dlvm top` and `dlvm dashboard` show of a cluster's nodes: one round per refresh.

Each refresh runs the node program nodeside/metrics.py on every node at once (sent whole as
`python3 -c`, nothing installed), over connections opened once: the cluster's agent's when
one answers, else a pool this sampler holds for its whole life. A node that does not answer
within the round is shown as such. What a node prints is hostile: only the marker line is
kept, parsed with node_json (bounded, each field's type and range checked); a node whose
answer does not check is shown as such (`answer refused`), with why, and nothing of it used.

A node far below the others (GPU utilization where the nodes have GPUs, else CPU) is marked:
in a data-parallel job every node should work about as hard, and the one that does not is a
straggler, or one whose process died while the others wait for it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlvm_cluster import nodeside
from dlvm_cluster.errors import StateError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.orchestrate.cluster.records import applied_spec, open_pool, require_inventory
from dlvm_cluster.orchestrate.jobs.store import JobRecord, JobStore
from dlvm_cluster.remote import agent_client, node_json
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.shell import join
from dlvm_cluster.state import ClusterState

if TYPE_CHECKING:
    from dlvm_cluster.remote.pool import SshPool
    from dlvm_cluster.remote.results import CommandResult, GroupResult

PROGRAM = "metrics"
MARKER = "@dlvm-metrics "
INTERVAL_S = 0.5  # the node measures CPU and network over this long
ROUND_TIMEOUT_S = 10.0  # a node that has not answered by then is shown as not answering
REFRESH_S = 2.0
LAG_FLOOR = 10.0  # percent: while the median node is below this, none is marked
LAG_RATIO = 0.5  # a node under this share of the median is far below the others
MAX_GPUS = 64
MAX_ANSWER = 64 << 10  # characters of one node's answer (a few hundred with 8 GPUs)
MAX_BYTES = float(1 << 60)  # no byte count or rate a node reports is believed above this
LOG_TAIL_BYTES = 64 * 1024
STEP_WORDS = ("step", "epoch", "iter", "loss")


@dataclass(frozen=True)
class GpuSample:
    index: int
    util_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None


OK = "ok"
NOT_ANSWERING = "not answering"  # unreachable, or no answer within the round
PROBE_FAILED = "probe failed"  # the node answered, the node program did not run there
REFUSED = "answer refused"  # what the node sent did not check


@dataclass(frozen=True)
class NodeSample:
    name: str
    rank: int
    status: str = OK
    error: str = ""  # with a status other than OK: why
    cpu_percent: float | None = None
    cpus: int | None = None
    scope: str = ""  # machine | namespace: what cpu and memory count (nodeside/metrics.py)
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    load: tuple[float, ...] = ()
    disk_used_bytes: int | None = None
    disk_total_bytes: int | None = None
    net_rx_bytes_per_s: float | None = None
    net_tx_bytes_per_s: float | None = None
    gpus: tuple[GpuSample, ...] = ()
    gpu_error: str = ""
    lagging: str = ""  # why this node is far below the others ('' : it is not)

    @property
    def answered(self) -> bool:
        return self.status == OK

    def busy_percent(self, *, gpus: bool) -> float | None:
        """What the lag rule compares: the mean GPU utilization, or CPU."""
        if not gpus:
            return self.cpu_percent
        utils = [gpu.util_percent for gpu in self.gpus if gpu.util_percent is not None]
        return sum(utils) / len(utils) if utils else None


@dataclass(frozen=True)
class JobLine:
    """A job as top shows it: its state, restarts and the latest step line of its head."""

    id: str
    state: str
    restarts: int
    latest: str


@dataclass(frozen=True)
class Frame:
    cluster: str
    taken_at: float
    nodes: tuple[NodeSample, ...]
    job: JobLine | None = None
    through: str = ""  # agent | pool: which warm connections carried the round


def read_sample(
    node: Node, lines: Sequence[str], silent: tuple[str, str] = (PROBE_FAILED, "no answer")
) -> NodeSample:
    """One node's sample from its output lines (the last marker line counts); `silent`: the
    status and why, should there be no marker line."""
    marked = [line[len(MARKER) :] for line in lines if line.startswith(MARKER)]
    if not marked:
        return NodeSample(node.name, node.rank, status=silent[0], error=silent[1])
    try:
        return _checked(node, node_json.loads_object(marked[-1], max_bytes=MAX_ANSWER))
    except node_json.NodeJsonError as why:
        return NodeSample(node.name, node.rank, status=REFUSED, error=str(why))


def why_silent(result: CommandResult | None) -> tuple[str, str]:
    """Why a node gave no answer: it was not reached or did not finish in time, or the
    program ran and failed (its exit code and last line)."""
    if result is None or result.exit_code is None:
        return NOT_ANSWERING, result.describe() if result is not None else "no result"
    last = result.tail[-1][:160] if result.tail else ""
    if result.exit_code == 0:
        return PROBE_FAILED, "it printed no answer"
    return PROBE_FAILED, f"exit {result.exit_code}" + (f": {last}" if last else "")


def _checked(node: Node, data: dict[str, Any]) -> NodeSample:
    disk = _object(data, "disk")
    load = _items(data, "load", 3)
    gpus = tuple(_gpu(item) for item in _items(data, "gpus", MAX_GPUS))
    scope = node_json.text(data, "scope", max_len=20, default="")
    return NodeSample(
        name=node.name,
        rank=node.rank,
        cpu_percent=_maybe(data, "cpu_percent", 100.0),
        cpus=_count(data, "cpus", high=1 << 16),
        scope=scope if scope in ("machine", "namespace") else "",
        memory_used_bytes=_count(data, "memory_used_bytes"),
        memory_total_bytes=_count(data, "memory_total_bytes"),
        load=tuple(node_json.number({"load": v}, "load", low=0, high=1e6) for v in load),
        disk_used_bytes=_count(disk, "used_bytes"),
        disk_total_bytes=_count(disk, "total_bytes"),
        net_rx_bytes_per_s=_maybe(data, "net_rx_bytes_per_s", MAX_BYTES),
        net_tx_bytes_per_s=_maybe(data, "net_tx_bytes_per_s", MAX_BYTES),
        gpus=gpus,
        gpu_error=node_json.text(data, "gpu_error", max_len=300, default=""),
    )


def _gpu(data: Any) -> GpuSample:
    if not isinstance(data, dict):
        raise node_json.NodeJsonError(f"a GPU is a {type(data).__name__}, not an object")
    index = _count(data, "index", high=1023)
    if index is None:
        raise node_json.NodeJsonError("a GPU without an index")
    return GpuSample(
        index=index,
        util_percent=_maybe(data, "util_percent", 100.0),
        memory_used_bytes=_count(data, "memory_used_bytes"),
        memory_total_bytes=_count(data, "memory_total_bytes"),
        temperature_c=node_json.number(data, "temperature_c", low=-100, high=300, default=None),
        power_w=_maybe(data, "power_w", 100_000.0),
    )


def _maybe(data: dict[str, Any], key: str, high: float) -> float | None:
    """A number from 0 to `high`, or None where the node does not know it."""
    value: float | None = node_json.number(data, key, low=0, high=high, default=None)
    return value


def _count(data: dict[str, Any], key: str, *, high: float = MAX_BYTES) -> int | None:
    """A whole number from 0 to `high` (bytes, an index), or None where unknown."""
    value = _maybe(data, key, high)
    if value is not None and not value.is_integer():
        raise node_json.NodeJsonError(f"{key} is {value}, not a whole number")
    return None if value is None else int(value)


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise node_json.NodeJsonError(f"{key} is a {type(value).__name__}, not an object")
    return value


def _items(data: dict[str, Any], key: str, limit: int) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > limit:
        raise node_json.NodeJsonError(f"{key} is not a list of at most {limit}")
    return value


def mark_lagging(nodes: Sequence[NodeSample]) -> tuple[NodeSample, ...]:
    """Each node far below the others marked: under LAG_RATIO of the median of the nodes
    that answered, when that median is at least LAG_FLOOR (an idle cluster marks none).
    GPU utilization is compared where every node that answered has GPUs, else CPU. With two
    nodes, the median is their mean: the idle one of a busy pair is marked."""
    answered = [node for node in nodes if node.answered]
    gpus = bool(answered) and all(node.gpus for node in answered)
    values = {node.name: node.busy_percent(gpus=gpus) for node in answered}
    known = [value for value in values.values() if value is not None]
    if len(known) < 2:
        return tuple(nodes)
    median = statistics.median(known)
    if median < LAG_FLOOR:
        return tuple(nodes)
    what = "GPU" if gpus else "CPU"
    marked = []
    for node in nodes:
        value = values.get(node.name)
        if value is not None and value < LAG_RATIO * median:
            why = f"far below the others: {what} {value:.0f}% against a median of {median:.0f}%"
            node = dataclasses.replace(node, lagging=why)
        marked.append(node)
    return tuple(marked)


def probe_command() -> str:
    """The shell text that runs the node program once (python3 on the node's PATH)."""
    source = nodeside.source(PROGRAM).decode()
    return join(["python3", "-c", source, str(INTERVAL_S)])


def job_line(state: ClusterState, inventory: Inventory) -> JobLine | None:
    """The running job (else the latest), with the latest step line of its head node."""
    records = JobStore(state).all()
    if not records:
        return None
    active = [record for record in records if record.active]
    record = (active or records)[-1]
    return JobLine(record.id, record.state, record.restarts, latest_step(record, inventory))


def latest_step(record: JobRecord, inventory: Inventory) -> str:
    """The last line of the head's output that speaks of a step (else its last line)."""
    names = record.nodes or [inventory.head.name]
    lines = log_tail(Path(record.local_logs) / f"{names[0]}.log") if record.local_logs else []
    for line in reversed(lines):
        if any(word in line.lower() for word in STEP_WORDS):
            return line
    return lines[-1] if lines else ""


def log_tail(path: Path, *, lines: int = 40, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """The last `lines` non-empty lines of a log, reading at most `limit` bytes from its end;
    [] when there is none. Each line cut to 500 characters."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            data = handle.read(limit)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if len(data) == limit and text:
        text = text[1:]  # the first line read may be the end of a longer one
    return [line[:500] for line in text if line.strip()][-lines:]


@dataclass
class _Lines:
    """Each node's marker lines from one round (other lines are dropped as they come)."""

    by_node: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sink(self, node: Node, stream: str, text: str) -> None:
        if stream == "out" and text.startswith(MARKER):
            with self.lock:
                kept = self.by_node.setdefault(node.name, [])
                if len(kept) < 4:
                    kept.append(text)


class Sampler:
    """Samples one cluster, one round per `frame()`, over connections kept between rounds.
    Use as a context manager: closing it closes the connections it opened."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._use_agent = not agent_client.disabled()
        self._pool: SshPool | None = None
        self._raw = b""
        self.inventory = require_inventory(state)
        self._digest = ""
        self._env: dict[str, str] = {}
        self._reload()

    def _reload(self) -> None:
        """Read the inventory again when its file changed (a scale): the next round asks the
        nodes the cluster has now."""
        try:
            raw = self.state.inventory_path.read_bytes()
        except OSError:
            return
        if raw == self._raw:
            return
        self._raw = raw
        try:
            self.inventory = Inventory.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            self.inventory = require_inventory(self.state)
        self._digest = agent_client.inventory_digest(raw)
        try:
            self._env = applied_spec(self.state).spec.plain_env()
        except StateError:
            self._env = {}
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def frame(self) -> Frame:
        self._reload()
        inventory = self.inventory
        nodes = inventory.nodes
        command = probe_command()
        commands = [
            wrap(command, node_environment(inventory, node, self._env), cluster=inventory.cluster)
            for node in nodes
        ]
        lines = _Lines()
        result, through = None, "agent"
        if self._use_agent and self._pool is None:
            result = agent_client.run(
                self.state.root,
                self._digest,
                nodes,
                commands,
                sink=lines.sink,
                timeout=ROUND_TIMEOUT_S,
            )
        if result is None:
            # No agent took it: this sampler's own connections, kept for every later round.
            self._use_agent, through = False, "pool"
            result = self._run_pooled(nodes, commands, lines)
        results = {item.node: item for item in result.results}
        samples = [
            read_sample(node, lines.by_node.get(node.name, []), why_silent(results.get(node.name)))
            for node in nodes
        ]
        return Frame(
            cluster=inventory.cluster,
            taken_at=time.time(),
            nodes=mark_lagging(samples),
            job=job_line(self.state, inventory),
            through=through,
        )

    def _run_pooled(
        self, nodes: Sequence[Node], commands: Sequence[str], lines: _Lines
    ) -> GroupResult:
        from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes

        if self._pool is None:
            self._pool = open_pool(self.state, self.inventory)
        return run_on_nodes(
            self._pool,
            nodes,
            each_its_own(nodes, commands),
            sink=lines.sink,
            timeout=ROUND_TIMEOUT_S,
        )
