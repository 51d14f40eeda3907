"""The one interface every provider implements, and the values that cross it.

Orchestrate asks a provider everything that depends on where the machines come from; it never
asks which kind of provider it holds. A provider never opens an SSH connection itself: what it
needs to know from SSH (which nodes answer, a host's key), orchestrate hands it as `Reach`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from dlvm_cluster.errors import StateError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec
from dlvm_cluster.state import ClusterState

# What a provider puts in the nodes' environment (Inventory.env) when the capacity under them
# ends at a known time (an EC2 Capacity Block): when, ISO 8601 with its UTC offset. Jobs read it
# to checkpoint in time; the supervisor warns a running job before then.
CAPACITY_ENDS_ENV = "DLVM_CAPACITY_ENDS_AT"


class NodeState(StrEnum):
    """A node's machine as its provider sees it (`status --json` node `state`)."""

    RUNNING = "running"
    STOPPED = "stopped"
    PREEMPTED = "preempted"
    MISSING = "missing"


@dataclass(frozen=True)
class HourlyRates:
    """What one node costs per hour, in USD: running (machine, GPUs and disk) and stopped
    (its disk alone)."""

    running: float
    stopped: float


@dataclass(frozen=True)
class StopMark:
    """Why and when a node was powered off, as its provider recorded it: `by` is `user`
    (`dlvm stop`), `autostop` (idle) or `max_hours`; `at` is seconds since the epoch."""

    by: str
    at: float
    action: str = "stop"  # down: the machine was to be deleted (see Provider.self_stop_command)


@dataclass(frozen=True)
class Reach:
    """What a provider may learn over SSH, asked through orchestrate.

    `unreachable(inventory)`: the names of the nodes that do not answer with their pinned key.
    `host_key(host, port)`: the key a host presents ("TYPE BASE64"), for a first contact."""

    unreachable: Callable[[Inventory], list[str]]
    host_key: Callable[[str, int], str]


@dataclass(frozen=True)
class KeyTrust:
    """Which host keys seen for the first time the user accepted: any (they said yes before
    seeing them), or exactly those shown to them, by (host, port). A machine presenting
    another key than the one shown is asked about again, never pinned on the way."""

    any_key: bool = False
    shown: Mapping[tuple[str, int], str] = field(default_factory=dict)

    def accepts(self, node: Node) -> bool:
        return self.any_key or self.shown.get((node.ip, node.port)) == node.host_key

    def adding(self, nodes: Sequence[Node]) -> KeyTrust:
        """This trust, and the keys of `nodes` as they were shown."""
        shown = {**self.shown, **{(node.ip, node.port): node.host_key for node in nodes}}
        return KeyTrust(any_key=self.any_key, shown=shown)


NO_TRUST = KeyTrust()


@dataclass(frozen=True)
class Converge:
    """One `up` (or `scale`) as a provider sees it: the spec to reach, and what is known."""

    loaded: LoadedSpec
    state: ClusterState
    previous: Inventory | None  # the nodes the state dir recorded, if any
    applied: bool  # the spec is the one last applied (nothing in it changed)
    progress: Progress
    reach: Reach
    trust: KeyTrust = NO_TRUST  # host keys seen for the first time that the user accepted
    # How long the machines may take to be created, in seconds (a flex-start VM waits for
    # capacity meanwhile); None: the provider's default.
    wait: float | None = None

    @property
    def spec(self) -> ClusterSpec:
        return self.loaded.spec


class UnpinnedHostKeys(UsageError):
    """Machines presented host keys that neither the cluster file nor an earlier `up` gave:
    nothing was stored or sent to them; the caller decides whether to trust the keys."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        listed = "; ".join(
            f"{node.name} {node.ip}:{node.port} {node.host_key_fingerprint}" for node in nodes
        )
        super().__init__(
            f"host keys seen for the first time: {listed}",
            hint="check each fingerprint with the machine's owner and confirm, or write each "
            "host's key as host_key in the cluster file",
        )
        self.nodes = tuple(nodes)


@dataclass(frozen=True)
class ProviderPlan:
    """What `up` would do: (action, what) pairs, a one-line summary, and whether the cluster
    exists already."""

    changes: tuple[tuple[str, str], ...]
    summary: str
    exists: bool


@dataclass(frozen=True)
class CapacityFacts:
    """How a cluster's machines are provided, where the provider offers a choice: what `plan`
    and `status` show, as words for people (`summary`) and as fields for scripts."""

    provisioning: str  # standard | spot | flex-start | reservation-bound
    reservation: str  # a reservation's name, "any" (any matching one) or "none"
    max_run_hours: int | None  # the provider ends each machine after this long
    summary: str

    def to_json(self) -> dict[str, object]:
        return {
            "provisioning": self.provisioning,
            "reservation": self.reservation,
            "max_run_hours": self.max_run_hours,
        }


@dataclass(frozen=True)
class BootReadiness:
    """Setup a machine does at boot, which every node must have finished before a job runs:
    orchestrate runs `probe` on each node until each answers `ready WHAT` or `failed STEP`
    (meanwhile `running STEP` or `waiting`), then, if any failed, `fallback` on every node
    (as root), so that all use the same `fallback_title` instead of `title`. `script` is the
    shell text both commands read on their standard input."""

    title: str  # what setup brings: GPUDirect-TCPX, ...
    fallback_title: str  # what every node uses when one failed: NCCL over TCP sockets
    script: str
    probe: str
    fallback: str
    timeout_s: float


@dataclass(frozen=True)
class TransportReading:
    """What the network NCCL used on one node amounts to on the provider's machines, from
    NCCL's own log lines: `detail` adds to the network's name in `dlvm check` ("efa, 32
    NICs"); `problem`, when the machines' GPU network was left unused, fails the node."""

    detail: str = ""
    problem: str = ""


@dataclass(frozen=True)
class Check:
    """One line of `dlvm doctor`: what was found, or what is wrong and the fix."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


class Bound:
    """What every implementation is built with (`providers.for_spec`, `for_kind`): the
    cluster's state dir, and its spec, None where a command has none (`down` or `status`
    after a failed first `up`, `doctor` without a file)."""

    def __init__(self, state: ClusterState, spec: ClusterSpec | None = None) -> None:
        self.state = state
        self._spec = spec

    @property
    def spec(self) -> ClusterSpec:
        if self._spec is None:
            raise StateError(
                f"cluster {self.state.name!r} was never brought up", hint="run `dlvm up FILE`"
            )
        return self._spec

    def read_transport(self, network: str, net_lines: Sequence[str]) -> TransportReading:
        """Nothing to add: the network's name says it all (every kind but aws)."""
        return TransportReading()


class Provider(Protocol):
    """Where a cluster's machines come from, built bound to one cluster (its state dir and
    spec, see `Bound`). One implementation per kind (providers/)."""

    @property
    def owns_machines(self) -> bool:
        """Whether `down` deletes the machines (True) or only forgets them (machines that
        existed before dlvm, from which dlvm removes only what it added)."""

    def check_host(self) -> None:
        """Raise when this machine cannot drive the provider at all (before any change)."""

    def provision(self, request: Converge) -> tuple[Inventory, bool]:
        """Make, converge or adopt the nodes; the inventory, and whether anything changed."""

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        """Recreate only the named nodes (lost, preempted or broken); the others are kept."""

    def plan(self, request: Converge) -> ProviderPlan:
        """What `up` would do, without changing anything (nor connecting to a node)."""

    def plan_notes(self) -> list[str]:
        """Warnings and the hourly price that `plan` shows before the changes."""

    def render(self) -> RenderedModule:
        """The Terraform root module and tfvars `up` applies."""

    def storage_script(self) -> str:
        """Make the spec's storage ready on this machine's side, and give the POSIX shell text
        that mounts it on a node, which orchestrate runs as the node's user on every node that
        `up`, `scale` or a replacement brings to the spec (so it must be idempotent); "" when
        the spec names no storage."""

    def destroy(self, progress: Progress) -> None:
        """Delete the machines `up` made (nothing for machines dlvm did not make)."""

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        """Per node, what the provider knows of its machine; a node left out is unknown to
        the provider (SSH reachability alone then tells)."""

    def provider_id(self, node: Node) -> str:
        """The provider's own name for the node's machine."""

    def hourly_rates(self) -> HourlyRates | None:
        """One node's price per hour running and stopped, where the provider knows prices."""

    def stop_nodes(self, inventory: Inventory, progress: Progress, *, by: str) -> None:
        """Power the nodes' machines off, keeping their disks (home, data, host keys): only
        storage is billed until they start again. `by` says why (StopMark.by). Machines dlvm
        does not own are refused."""

    def start_nodes(self, inventory: Inventory, progress: Progress) -> None:
        """Start the stopped machines of these nodes again, on the same disks (never
        recreated); the caller then waits for SSH."""

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        """Per stopped node, why and when it stopped, where the provider keeps it (a node left
        out: the provider does not know)."""

    def self_stop_command(self, action: str) -> str | None:
        """Shell text a node runs to apply an autostop `action` (stop, down) to its own
        machine, with DLVM_STOP_REASON set to the StopMark.by to record; None: this provider's
        machines cannot do it (autostop is refused)."""

    def status_price(self, nodes: int) -> str | None:
        """The hourly price line of `nodes` nodes, where the provider knows prices."""

    def boot_readiness(self) -> BootReadiness | None:
        """The boot-time setup whose verdict `up`, `scale`, `start` and a recovery wait for
        on every node before a job can run; None when the machines have none."""

    def capacity(self) -> CapacityFacts | None:
        """How the machines are provided (provisioning model, reservation, run-time limit),
        where the provider offers such a choice; `plan` and `status` show it."""

    def read_transport(self, network: str, net_lines: Sequence[str]) -> TransportReading:
        """What NCCL's `network` on a node (`Using network NAME`) and the NET/ lines NCCL and
        its plugin logged there (node output: matched to known forms only) say of the
        machines' GPU network (`dlvm check`)."""

    def doctor(self, reach: Reach) -> list[Check]:
        """The checks `dlvm doctor` runs: what this machine and the spec (if bound to one)
        need."""
