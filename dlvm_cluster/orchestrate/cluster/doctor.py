"""doctor: does this machine have what the chosen provider needs? One line per check, each
with the fix when it fails."""

from __future__ import annotations

from dlvm_cluster import providers
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.providers.base import Check
from dlvm_cluster.spec.model import ClusterSpec


def doctor(spec: ClusterSpec | None) -> list[Check]:
    """The checks of the spec's provider (the local provider's without a spec)."""
    name = spec.name if spec else providers.DEFAULT_KIND  # the state whose keys SSH would use
    with Cluster.named(name) as cluster:
        provider = providers.for_spec(spec, cluster.state) if spec else cluster.provider
        return provider.doctor(cluster.reach())
