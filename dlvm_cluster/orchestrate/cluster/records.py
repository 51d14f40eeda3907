"""What the state dir remembers of a cluster: its inventory and the spec last applied."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlvm_cluster.errors import SpecError, StateError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.state import ClusterState, write_atomic

if TYPE_CHECKING:
    from dlvm_cluster.remote.pool import SshPool
    from dlvm_cluster.remote.relay import AgentRelay
    from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec


def load_inventory(state: ClusterState) -> Inventory | None:
    data = state.read_json(state.inventory_path)
    return Inventory.from_json(data) if data else None


def require_inventory(state: ClusterState) -> Inventory:
    inventory = load_inventory(state)
    if inventory is None:
        raise StateError(
            f"cluster {state.name!r} has no nodes recorded",
            hint="run `dlvm up FILE` to create it",
        )
    return inventory


def save_inventory(state: ClusterState, inventory: Inventory) -> None:
    """Record the nodes and pin their keys; an inventory unfit for ssh files (Node.checked)
    is refused before anything is written."""
    known_hosts = inventory.known_hosts()
    state.write_json(state.inventory_path, inventory.to_json())
    write_atomic(state.known_hosts, known_hosts)


def identity_path(state: ClusterState, inventory: Inventory) -> Path:
    """The key that reaches the nodes: the user's for machines that already exist (ssh
    provider's identity_file), else the cluster's own."""
    if inventory.identity_file:
        return Path(inventory.identity_file).expanduser()
    return state.key_path


def open_pool(state: ClusterState, inventory: Inventory, *, relay: bool = False) -> SshPool:
    """Connections to the cluster's nodes with the right key: the user's for machines that
    already exist (ssh provider), else the cluster's own. `relay`: try the cluster's agent
    first (`agent_relay`)."""
    # Imported here so that paths which never connect (the warm exec client) skip paramiko.
    from dlvm_cluster.remote.connection import Credentials
    from dlvm_cluster.remote.pool import SshPool

    credentials = Credentials(identity_path(state, inventory))
    return SshPool(inventory, credentials, relay=agent_relay(state) if relay else None)


def agent_relay(state: ClusterState) -> AgentRelay | None:
    """The cluster's agent as a way to its nodes (remote/relay.py); None where agents are
    off (DLVM_NO_AGENT=1)."""
    from dlvm_cluster.remote import agent_client
    from dlvm_cluster.remote.relay import AgentRelay

    return None if agent_client.disabled() else AgentRelay(state)


def spec_digest(spec: ClusterSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def save_applied(state: ClusterState, loaded: LoadedSpec, *, scaled: bool = False) -> None:
    """Record the spec the nodes now match; `scaled` marks a node count set by `dlvm scale`
    rather than by the file, so that `up FILE` asks before going back to the file's count."""
    save_spec(state, state.applied_spec_path, loaded, scaled=scaled)


def save_spec(state: ClusterState, path: Path, loaded: LoadedSpec, *, scaled: bool = False) -> None:
    """Write a spec as the state dir keeps it: the model, the file's text and where it came
    from (files in it are relative to that), and its digest; read back by `read_spec`."""
    state.write_json(
        path,
        {
            "scaled": scaled,
            "digest": spec_digest(loaded.spec),
            "source": str(loaded.path),
            "text": loaded.text,
            "spec": loaded.spec.model_dump(),
        },
    )


def record_kind(state: ClusterState, kind: str) -> None:
    """Record the cluster's provider kind before its machines are touched, so that `down` and
    `status` ask the right provider even when the first `up` failed early."""
    write_atomic(state.provider_kind_path, kind + "\n")


def cluster_kind(state: ClusterState) -> str | None:
    """The provider kind the cluster was made with (None: never provisioned)."""
    try:
        recorded = state.provider_kind_path.read_text().strip()
    except FileNotFoundError:
        recorded = ""
    return recorded or applied_kind(state)  # state dirs from before the record


def applied_kind(state: ClusterState) -> str | None:
    """The provider kind of the spec last applied, read without loading the spec model."""
    kind = ((applied_record(state).get("spec") or {}).get("provider") or {}).get("kind")
    return kind if isinstance(kind, str) else None


def applied_record(state: ClusterState) -> dict[str, Any]:
    """The applied spec's record as `save_spec` wrote it ({}: never brought up)."""
    data = state.read_json(state.applied_spec_path)
    return data if isinstance(data, dict) else {}


def recorded_digest(record: Mapping[str, Any]) -> str:
    """The digest of the spec a record holds (`spec_digest` when it was saved)."""
    return str(record.get("digest", ""))


def scaled_count(record: Mapping[str, Any]) -> int | None:
    """The node count `dlvm scale` set, if the applied record says the cluster was scaled
    since the last `up`."""
    if not record.get("scaled"):
        return None
    return int(record["spec"]["nodes"]["count"])


def applied_spec(state: ClusterState) -> LoadedSpec:
    """The spec as last applied, with the path it came from (files are relative to it)."""
    loaded = read_spec(state, state.applied_spec_path)
    if loaded is None:
        raise StateError(f"cluster {state.name!r} was never brought up", hint="run `dlvm up FILE`")
    return loaded


@dataclass(frozen=True)
class Drift:
    """The cluster file as it is now against the spec `up` applied from it."""

    path: Path
    changed: tuple[str, ...]  # the top-level keys whose values differ
    problem: str = ""  # why the file as it is now cannot be read as a cluster file


def drift_since_applied(state: ClusterState) -> Drift | None:
    """What changed in the applied spec's file since `up` (None: nothing that matters, only
    comments or layout, or the file is gone). A `launch NAME` runs the applied spec, so an
    edit the user made is not in it; `launch FILE` and `up FILE` would take it."""
    data = state.read_json(state.applied_spec_path)
    if not data or not data.get("source"):
        return None
    path = Path(str(data["source"]))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if text == data.get("text"):
        return None
    from dlvm_cluster import providers

    try:
        current = providers.load_spec(path).spec
    except SpecError as exc:
        return Drift(path, (), problem=exc.message.splitlines()[0])
    applied = providers.spec_kinds().parse(data["spec"])
    changed = tuple(
        key
        for key in type(applied).model_fields
        if getattr(applied, key) != getattr(current, key)
        and not (key == "nodes" and data.get("scaled") and _same_but_count(applied, current))
    )
    return Drift(path, changed) if changed else None


def _same_but_count(applied: ClusterSpec, current: ClusterSpec) -> bool:
    """`dlvm scale` changed the count the file gives: that is no edit of the file."""
    return applied.nodes.model_copy(update={"count": current.nodes.count}) == current.nodes


def read_spec(state: ClusterState, path: Path) -> LoadedSpec | None:
    """A spec `save_spec` wrote (None: there is none)."""
    return spec_of_record(state.read_json(path))


def spec_of_record(data: Mapping[str, Any] | None) -> LoadedSpec | None:
    """The spec a record of `save_spec` holds (None: no record)."""
    if not data:
        return None
    from dlvm_cluster import providers
    from dlvm_cluster.spec.model import LoadedSpec  # pydantic: not for `exec`

    spec = providers.spec_kinds().parse(data["spec"])
    return LoadedSpec(spec=spec, path=Path(data["source"]), text=str(data.get("text", "")))


def save_secret_names(state: ClusterState, names: Iterable[str]) -> None:
    """Record which secrets the nodes' secrets files now hold (names only, never values):
    `launch FILE` may install secrets the applied spec does not name, and output must still
    be masked with them."""
    state.write_json(state.secret_names_path, sorted(names))


def installed_secret_names(state: ClusterState) -> tuple[str, ...]:
    """The names of the secrets last installed on the nodes (none recorded: empty)."""
    data = state.read_json(state.secret_names_path)
    return tuple(str(name) for name in data) if isinstance(data, list) else ()


def held_secret_names(state: ClusterState, spec: ClusterSpec | None) -> tuple[str, ...]:
    """The secrets the nodes may hold, whose values output is masked with: the applied
    spec's (None: it has none) and any installed since (`launch FILE` may have added some)."""
    declared = spec.secret_env() if spec is not None else {}
    return tuple(sorted({*declared, *installed_secret_names(state)}))
