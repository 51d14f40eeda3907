"""doctor: does this machine have what the chosen provider needs? One line per check, each
with the fix when it fails."""

from __future__ import annotations

from dlvm_cluster import providers
from dlvm_cluster.orchestrate.cluster.reach import ssh_reach
from dlvm_cluster.providers.base import Check
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


def doctor(spec: ClusterSpec | None) -> list[Check]:
    """The checks of the spec's provider (the local provider's without a spec)."""
    name = spec.name if spec else providers.DEFAULT_KIND  # the state whose keys SSH would use
    state = ClusterState.for_name(name)
    provider = providers.for_spec(spec, state) if spec else providers.for_kind(name, state)
    return provider.doctor(ssh_reach(state))
