"""One cluster, for the length of one command: every stage of the command is handed it.

A `Cluster` holds what the stages would otherwise each re-derive from the state dir:
- its name and state-dir layout (`state`, a `ClusterState`) and its lock;
- the inventory and the spec last applied, read once and saved through it (a stage that
  saves them updates what the next stage sees);
- the provider, built once;
- one SSH pool, opened on first use and shared by every stage (reach, setup, jobs,
  recovery), so a command connects to each node at most once while the node stays the same
  (and not at all for what the cluster's warm agent carries, once `through_agent()` was
  asked: remote/relay.py);
- its job store.

`close()` (or leaving `with`) closes the pool. Verbs take a `Cluster`; `cli/resolve.py`
returns one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dlvm_cluster import providers
from dlvm_cluster.errors import StateError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster import records
from dlvm_cluster.orchestrate.jobs.store import JobStore
from dlvm_cluster.state import ClusterState

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import Provider, Reach
    from dlvm_cluster.providers.kind import Feature, Refusal
    from dlvm_cluster.remote.pool import SshPool
    from dlvm_cluster.spec.model import LoadedSpec

_UNREAD = object()


class Cluster:
    """The cluster a command works on (see the module docstring)."""

    def __init__(
        self,
        state: ClusterState,
        *,
        loaded: LoadedSpec | None = None,
        provider: Provider | None = None,
    ) -> None:
        """`loaded`: the cluster file the command was given (its provider kind wins over the
        recorded one); `provider`: one to use instead of building it (tests hand one)."""
        self.state = state
        self.loaded = loaded
        self._provider = provider
        self._inventory: object = _UNREAD
        self._applied: object = _UNREAD
        self._applied_record: dict[str, Any] | None = None  # spec.json as read, once
        self._pool: SshPool | None = None
        self._pool_lock = threading.Lock()
        self._through_agent = False
        self.jobs = JobStore(state)

    @classmethod
    def named(cls, name: str) -> Cluster:
        return cls(ClusterState.for_name(name))

    @classmethod
    def of(cls, loaded: LoadedSpec) -> Cluster:
        return cls(ClusterState.for_name(loaded.spec.name), loaded=loaded)

    @property
    def name(self) -> str:
        return self.state.name

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the cluster's lock (`ClusterState.lock`); records are read afresh under it,
        since another command may have changed them before it was taken."""
        with self.state.lock(command):
            self.forget_records()
            yield

    # -- records, read once -------------------------------------------------------------

    def forget_records(self) -> None:
        """Read the inventory and applied spec again on next use (another process wrote
        them: a supervisor, or a `scale` while this command waited)."""
        self._inventory = _UNREAD
        self._forget_applied()

    @property
    def inventory(self) -> Inventory | None:
        if self._inventory is _UNREAD:
            self._inventory = records.load_inventory(self.state)
        return self._inventory  # type: ignore[return-value]

    def require_inventory(self) -> Inventory:
        inventory = self.inventory
        if inventory is None:
            raise StateError(
                f"cluster {self.name!r} has no nodes recorded",
                hint="run `dlvm up FILE` to create it",
            )
        return inventory

    def save_inventory(self, inventory: Inventory) -> None:
        records.save_inventory(self.state, inventory)
        self._inventory = inventory
        if self._pool is not None:
            self._pool.inventory = inventory

    def forget_inventory(self) -> None:
        """The cluster has no nodes any more (made anew by `up`)."""
        self.state.inventory_path.unlink(missing_ok=True)
        self.state.applied_spec_path.unlink(missing_ok=True)
        self._inventory = None
        self._forget_applied()

    @property
    def applied(self) -> LoadedSpec | None:
        """The spec as last applied (None: never brought up)."""
        if self._applied is _UNREAD:
            self._applied = records.spec_of_record(self._record())
        return self._applied  # type: ignore[return-value]

    def _record(self) -> dict[str, Any]:
        """The applied spec's record (spec.json), read once for every question asked of it."""
        if self._applied_record is None:
            self._applied_record = records.applied_record(self.state)
        return self._applied_record

    def _forget_applied(self) -> None:
        self._applied = _UNREAD
        self._applied_record = None

    def is_applied(self, loaded: LoadedSpec) -> bool:
        """Whether `loaded` is the spec last applied (the nodes already match it)."""
        return records.recorded_digest(self._record()) == records.spec_digest(loaded.spec)

    def require_applied(self) -> LoadedSpec:
        applied = self.applied
        if applied is None:
            raise StateError(
                f"cluster {self.name!r} was never brought up", hint="run `dlvm up FILE`"
            )
        return applied

    def save_applied(self, loaded: LoadedSpec, *, scaled: bool = False) -> None:
        records.save_applied(self.state, loaded, scaled=scaled)
        self._forget_applied()  # read back as saved (`scaled` rides along)

    def scaled_count(self) -> int | None:
        """The node count `dlvm scale` set, if the cluster was scaled since the last `up`."""
        return records.scaled_count(self._record())

    # -- the provider, built once ---------------------------------------------------------

    @property
    def kind(self) -> str:
        """The provider kind: the file's, when one was given, else the one recorded."""
        if self.loaded is not None:
            return self.loaded.spec.provider.kind
        return records.cluster_kind(self.state) or providers.DEFAULT_KIND

    @property
    def provider(self) -> Provider:
        """The provider, built once, bound to the cluster's state dir and to its spec: the
        file's when one was given, else the applied one (None after a first `up` that
        failed early)."""
        if self._provider is None:
            loaded = self.loaded or self.applied
            spec = loaded.spec if loaded is not None else None
            self._provider = providers.for_kind(self.kind, self.state, spec)
        return self._provider

    def require(self, feature: Feature, **details: str) -> None:
        """Refuse, in the kind's own words, a verb that needs a feature the kind declares it
        lacks (providers/kind.py): asked once, before the verb starts anything."""
        providers.require(self.kind, feature, **details)

    def lacking(self, feature: Feature) -> Refusal | None:
        """Why the kind lacks `feature` (None: it has it), for a verb that goes on without."""
        return providers.lacking(self.kind, feature)

    # -- SSH: one pool per command ------------------------------------------------------

    def pool(self, inventory: Inventory | None = None) -> SshPool:
        """The command's SSH pool (opened on first use, then shared): one connection per
        node, kept while the node stays the same. `inventory`: the nodes to reach, when not
        the recorded ones (a provider asking before it records them)."""
        inventory = inventory or self.require_inventory()
        with self._pool_lock:
            if self._pool is None:
                self._pool = records.open_pool(self.state, inventory, relay=self._through_agent)
            else:
                self._pool.inventory = inventory
            return self._pool

    def through_agent(self) -> None:
        """Let the pool go through the cluster's agent while one answers for the recorded
        nodes (remote/relay.py): for a command that only checks and keeps nodes as they are,
        such as `up` of an unchanged cluster; it connects itself for anything else."""
        with self._pool_lock:
            self._through_agent = True
            if self._pool is not None and self._pool.relay is None:
                self._pool.relay = records.agent_relay(self.state)

    def reach(self) -> Reach:
        """What a provider may learn over SSH, through this command's pool."""
        from dlvm_cluster.providers.base import Reach

        def unreachable(inventory: Inventory) -> list[str]:
            from dlvm_cluster.remote.pool import HEALTH_TIMEOUT

            pool = self.pool(self.inventory or inventory)
            return sorted(pool.connect(inventory.nodes, timeout=HEALTH_TIMEOUT))

        def host_key(host: str, port: int) -> str:
            from dlvm_cluster.remote.connection import fetch_host_key

            return fetch_host_key(host, port, timeout=5)

        return Reach(unreachable=unreachable, host_key=host_key)

    def subset(self, names: list[str]) -> Inventory:
        """The recorded inventory with only the named nodes."""
        inventory = self.require_inventory()
        return dataclasses.replace(
            inventory, nodes=tuple(n for n in inventory.nodes if n.name in names)
        )

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
