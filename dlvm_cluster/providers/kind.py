"""What a provider kind declares about itself, in one value its package exports (`KIND`) and
the registry lists (providers/registry.py): its cluster-file keys and rules, the features it
lacks with the words that refuse them, and where its implementation is."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn

from dlvm_cluster.errors import DlvmError, UsageError
from dlvm_cluster.spec.kinds import SpecKind

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import Provider
    from dlvm_cluster.spec.model import ClusterSpec
    from dlvm_cluster.state import ClusterState


class Feature(StrEnum):
    """What a provider may lack; orchestrate asks before the verb that needs it
    (`providers.require`), so no verb starts what the provider cannot finish."""

    STOP_START = "stop and start"  # dlvm stop, dlvm start
    REPLACE = "replace"  # a lost node made again (a job's recovery)
    STORAGE = "storage"  # the spec's `storage` mounted on the nodes
    AUTOSTOP = "autostop"  # the nodes power themselves off when idle
    RENDER = "render"  # a Terraform module to show (dlvm render)
    PRICES = "prices"  # what the machines cost per hour


@dataclass(frozen=True)
class Refusal:
    """Why a kind lacks a feature, as the user is told: `message` may name `{names}` (the
    nodes a verb was for); `error` is the DlvmError class, which sets the exit code."""

    message: str
    hint: str = ""
    error: type[DlvmError] = UsageError

    def raise_for(self, **details: str) -> NoReturn:
        raise self.error(self.message.format(**details), hint=self.hint)


@dataclass(frozen=True)
class ProviderKind:
    """One provider kind. `spec`: its keys and load-time rules (handed to the loader);
    `implementation`: "module:Class", imported only when a cluster of the kind is handled
    (or the class itself, for a kind defined where it is registered);
    `lacks`: each feature it does not have, with its refusal (a feature missing from
    `lacks` is declared present)."""

    spec: SpecKind
    implementation: str | Callable[[ClusterState, ClusterSpec | None], Provider]
    lacks: Mapping[Feature, Refusal] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def has(self, feature: Feature) -> bool:
        return feature not in self.lacks

    def require(self, feature: Feature, **details: str) -> None:
        """Raise the kind's refusal when it lacks `feature`."""
        refusal = self.lacks.get(feature)
        if refusal is not None:
            refusal.raise_for(**details)

    def build(self, state: ClusterState, spec: ClusterSpec | None) -> Provider:
        """The kind's provider, bound to the cluster's state dir and spec."""
        if not isinstance(self.implementation, str):
            return self.implementation(state, spec)
        module, _, name = self.implementation.partition(":")
        provider: Provider = getattr(importlib.import_module(module), name)(state, spec)
        return provider
