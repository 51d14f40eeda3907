"""Every provider kind dlvm knows, each its package's `KIND` entry (providers/kind.py): a new
kind is its package and one line in `KINDS` below, nothing else outside its package.

Tests may add an entry to `KINDS` (a kind made for the test); everything that asks about
kinds reads it when asked, never a copy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlvm_cluster.errors import UsageError
from dlvm_cluster.providers import local, ssh
from dlvm_cluster.providers.aws.kind import KIND as AWS
from dlvm_cluster.providers.gcp.kind import KIND as GCP
from dlvm_cluster.providers.kind import ProviderKind
from dlvm_cluster.spec.kinds import SpecKinds

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import Provider
    from dlvm_cluster.providers.gcp.provider import ComputeEngine
    from dlvm_cluster.providers.local import NamespaceNodes
    from dlvm_cluster.providers.ssh import ExistingHosts
    from dlvm_cluster.state import ClusterState

    # mypy checks here that each implementation has the whole interface.
    _STATE = ClusterState.for_name("typed")
    _IMPLEMENTED: tuple[Provider, ...] = (
        NamespaceNodes(_STATE),
        ExistingHosts(_STATE),
        ComputeEngine(_STATE),
    )

# kind -> its entry, in the order messages list them.
KINDS: dict[str, ProviderKind] = {entry.name: entry for entry in (local.KIND, GCP, AWS, ssh.KIND)}


def entry(kind: str) -> ProviderKind:
    """The entry of `kind`; a kind no entry has (a state dir of a newer dlvm) is refused."""
    found = KINDS.get(kind)
    if found is None:
        raise UsageError(
            f"this dlvm has no provider of kind {kind!r}",
            hint=f"it knows {', '.join(KINDS)}; use the dlvm that made the cluster",
        )
    return found


def spec_kinds() -> SpecKinds:
    """What the cluster-file loader needs of every kind (keys, models, rules)."""
    return SpecKinds(tuple(kind.spec for kind in KINDS.values()))
