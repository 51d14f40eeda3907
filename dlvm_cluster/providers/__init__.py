"""Where a cluster's machines come from: one implementation of providers.base.Provider per
provider kind, chosen here and nowhere else.

    local   providers/local.py   network namespaces on this machine (terraform/local)
    ssh     providers/ssh.py     machines that exist already (no Terraform)
    gcp     providers/gcp/       Compute Engine VMs (terraform/gcp, the Compute API)

A provider's module is imported only when a cluster of its kind is handled, so the gcp code
(and Google's client) stays out of local and ssh commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import Provider
    from dlvm_cluster.providers.gcp.provider import ComputeEngine
    from dlvm_cluster.providers.local import NamespaceNodes
    from dlvm_cluster.providers.ssh import ExistingHosts
    from dlvm_cluster.spec.model import ClusterSpec

    # mypy checks here that each implementation has the whole interface.
    _IMPLEMENTED: tuple[Provider, ...] = (NamespaceNodes(), ExistingHosts(), ComputeEngine())

# kind -> "module:class". A new provider is one package and one line here.
_IMPLEMENTATIONS = {
    "local": "dlvm_cluster.providers.local:NamespaceNodes",
    "ssh": "dlvm_cluster.providers.ssh:ExistingHosts",
    "gcp": "dlvm_cluster.providers.gcp.provider:ComputeEngine",
}
DEFAULT_KIND = "local"


def for_kind(kind: str) -> Provider:
    """The provider of `kind` (a value of the spec's provider.kind)."""
    module, _, name = _IMPLEMENTATIONS[kind].partition(":")
    provider: Provider = getattr(importlib.import_module(module), name)()
    return provider


def for_spec(spec: ClusterSpec) -> Provider:
    return for_kind(spec.provider.kind)


def kinds() -> list[str]:
    return list(_IMPLEMENTATIONS)
