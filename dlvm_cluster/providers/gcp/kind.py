"""The gcp provider's registry entry: its keys and rules for the loader, its features (all of
them) and its implementation, imported only for a gcp cluster (Google's client with it)."""

from __future__ import annotations

from dlvm_cluster.providers.gcp.config import GcpConfig, GcpNodes
from dlvm_cluster.providers.gcp.rules import gcp_rules
from dlvm_cluster.providers.kind import ProviderKind
from dlvm_cluster.spec.kinds import SpecKind

KIND = ProviderKind(
    spec=SpecKind("gcp", GcpConfig, GcpNodes, gcp_rules),
    implementation="dlvm_cluster.providers.gcp.provider:ComputeEngine",
)
