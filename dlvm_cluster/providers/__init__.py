"""Where a cluster's machines come from: one implementation of providers.base.Provider per
provider kind, chosen here and nowhere else, from the kinds' entries in registry.py.

    local   providers/local.py   network namespaces on this machine (terraform/local)
    ssh     providers/ssh.py     machines that exist already (no Terraform)
    gcp     providers/gcp/       Compute Engine VMs (terraform/gcp, the Compute API)

A provider's implementation is imported only when a cluster of its kind is handled, so the gcp
code (and Google's client) stays out of local and ssh commands; the registry itself (the
kinds' keys and rules) only where a spec is read, so `exec` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import Provider
    from dlvm_cluster.providers.kind import Feature, Refusal
    from dlvm_cluster.spec.kinds import SpecKinds
    from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec
    from dlvm_cluster.state import ClusterState

DEFAULT_KIND = "local"


def for_kind(kind: str, state: ClusterState, spec: ClusterSpec | None = None) -> Provider:
    """The provider of `kind` (a value of the spec's provider.kind) bound to the cluster of
    `state`, and to its spec where the command has one."""
    from dlvm_cluster.providers.registry import entry

    return entry(kind).build(state, spec)


def for_spec(spec: ClusterSpec, state: ClusterState) -> Provider:
    """The provider of `spec`'s kind, bound to it and to its cluster's state dir."""
    return for_kind(spec.provider.kind, state, spec)


def kinds() -> list[str]:
    from dlvm_cluster.providers.registry import KINDS

    return list(KINDS)


def require(kind: str, feature: Feature, **details: str) -> None:
    """Refuse a verb that needs `feature` on a cluster of `kind` when the kind lacks it, with
    the kind's own words and error (exit code); orchestrate asks before the verb starts."""
    from dlvm_cluster.providers.registry import entry

    entry(kind).require(feature, **details)


def lacking(kind: str, feature: Feature) -> Refusal | None:
    """Why `kind` lacks `feature` (None: it has it), for a verb that goes on without it."""
    from dlvm_cluster.providers.registry import entry

    return entry(kind).lacks.get(feature)


def spec_kinds() -> SpecKinds:
    """Every kind's cluster-file keys and rules, for the loader."""
    from dlvm_cluster.providers.registry import spec_kinds as registered

    return registered()


def load_spec(path: Path) -> LoadedSpec:
    """The cluster file at `path`, validated with every registered kind's keys and rules."""
    from dlvm_cluster.spec import load

    return load.load_spec(path, spec_kinds())


def load_spec_text(raw: bytes | str, path: Path) -> LoadedSpec:
    """Cluster-file content, validated as `load_spec` does; `path` names it in messages."""
    from dlvm_cluster.spec import load

    return load.load_spec_text(raw, path, spec_kinds())
