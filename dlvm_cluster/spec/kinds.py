"""What the loader needs of each provider kind: its `provider:` model, its `nodes:` model and
its own rules. Handed in by whoever loads a file (the provider registry, providers/registry.py),
since the spec never imports providers; so a kind's errors still point at file:line:column.

A file is validated with its kind's model (`SpecKind.model`): a ClusterSpec whose `provider`
and `nodes` are the kind's own, so a key of another kind is refused where it is written."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from dlvm_cluster.spec.model import ClusterSpec, Nodes, ProviderConfig
from dlvm_cluster.spec.rules import semantic_problems

if TYPE_CHECKING:
    # Only the type: locate brings ruamel, which the warm `exec` path must not import.
    from dlvm_cluster.spec.locate import Loc

Problem = tuple["Loc", str]
Rules = Callable[[ClusterSpec], list[Problem]]


def no_rules(spec: ClusterSpec) -> list[Problem]:
    return []


@dataclass(frozen=True)
class SpecKind:
    """One provider kind as the cluster file sees it. `rules(spec)`: what the kind would refuse
    later that spans several fields, as (field path, message), checked while the file's
    positions are known; `spec` is of this kind's model."""

    name: str
    config: type[ProviderConfig]
    nodes: type[Nodes] = Nodes
    rules: Rules = no_rules

    @property
    def node_keys(self) -> frozenset[str]:
        """The `nodes:` keys this kind takes beyond those every kind takes."""
        return frozenset(self.nodes.model_fields) - frozenset(Nodes.model_fields)

    @property
    def config_keys(self) -> frozenset[str]:
        return frozenset(self.config.model_fields)

    @property
    def model(self) -> type[ClusterSpec]:
        return _kind_model(self.config, self.nodes)


@functools.cache
def _kind_model(config: type[ProviderConfig], nodes: type[Nodes]) -> type[ClusterSpec]:
    name = config.__name__.removesuffix("Config") + "ClusterSpec"
    model: type[ClusterSpec] = create_model(
        name,
        __base__=ClusterSpec,
        __module__=config.__module__,
        provider=(config, ...),
        nodes=(nodes, ...),
    )
    return model


@dataclass(frozen=True)
class SpecKinds:
    """Every kind a cluster file may name, in the order messages list them."""

    kinds: tuple[SpecKind, ...]

    @property
    def names(self) -> list[str]:
        return [kind.name for kind in self.kinds]

    def get(self, name: object) -> SpecKind | None:
        return next((kind for kind in self.kinds if kind.name == name), None)

    def model_for(self, data: Mapping[str, Any]) -> type[ClusterSpec]:
        """The model that validates `data`: its kind's, or, when `provider.kind` names none,
        one that reports the provider's problem (the kinds' configs as a union)."""
        provider = data.get("provider")
        kind = self.get(provider.get("kind")) if isinstance(provider, Mapping) else None
        return kind.model if kind is not None else self._dispatch_model()

    def parse(self, data: Mapping[str, Any]) -> ClusterSpec:
        """A spec from plain data (the applied spec in the state dir). One written before
        each kind's keys were its own holds every kind's `nodes:` keys, which had no effect
        on the others: keys of other kinds are dropped, not refused."""
        kind = self.get(_section(data, "provider").get("kind"))
        if kind is not None:
            data = {
                **data,
                "provider": self._own(data, "provider", kind.config_keys),
                "nodes": self._own(data, "nodes", kind.node_keys | _GENERIC_NODE_KEYS),
            }
        return self.model_for(data).model_validate(data)

    def _own(self, data: Mapping[str, Any], section: str, own: frozenset[str]) -> dict[str, Any]:
        values = _section(data, section)
        foreign = {key for key in values if key not in own and self.takers((section,), key)}
        return {key: value for key, value in values.items() if key not in foreign}

    def takers(self, section: Loc, key: str | int) -> list[str]:
        """The kinds that take `key` under `provider:` or `nodes:` (section)."""
        if section == ("provider",):
            return [kind.name for kind in self.kinds if key in kind.config_keys]
        if section == ("nodes",):
            return [kind.name for kind in self.kinds if key in kind.node_keys]
        return []

    def problems(self, spec: ClusterSpec) -> list[Problem]:
        """The rules of the spec's kind, then those every file follows (spec/rules.py)."""
        kind = self.get(spec.provider.kind)
        return (kind.rules(spec) if kind is not None else []) + semantic_problems(spec)

    def _dispatch_model(self) -> type[ClusterSpec]:
        return _dispatch(tuple(kind.config for kind in self.kinds))

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of a cluster file, for editors (yaml-language-server) and checks:
        `provider` is one of the kinds' configs, and `nodes` the kind's own (if/then on
        provider.kind)."""
        models: list[type[BaseModel]] = [ClusterSpec, *(kind.config for kind in self.kinds)]
        models += [*dict.fromkeys(kind.nodes for kind in self.kinds)]
        refs, defs = models_json_schema(
            [(model, "validation") for model in models], ref_template="#/$defs/{model}"
        )
        definitions = defs["$defs"]
        top = definitions.pop(ClusterSpec.__name__)
        definitions.pop(ProviderConfig.__name__, None)

        def ref(model: type[Any]) -> dict[str, Any]:
            return dict(refs[(model, "validation")])

        top["properties"]["provider"] = {"oneOf": [ref(kind.config) for kind in self.kinds]}
        node_models = [*dict.fromkeys(kind.nodes for kind in self.kinds)]
        top["properties"]["nodes"] = {"anyOf": [ref(model) for model in node_models]}
        top["allOf"] = [
            {
                "if": {"properties": {"provider": {"properties": {"kind": {"const": kind.name}}}}},
                "then": {"properties": {"nodes": ref(kind.nodes)}},
            }
            for kind in self.kinds
        ]
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": definitions,
            **top,
            "title": "dlvm cluster file",
        }


@functools.cache
def _dispatch(configs: tuple[type[ProviderConfig], ...]) -> type[ClusterSpec]:
    """A ClusterSpec whose provider is any kind's (told apart by `kind`), for a file whose kind
    is missing or unknown: validating with it reports the kind's problem as pydantic words it,
    and nothing of `nodes`, whose keys depend on the kind."""
    union: Any = configs[0]
    if len(configs) > 1:
        union = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007
    model: type[ClusterSpec] = create_model(
        "ClusterSpec", __base__=ClusterSpec, provider=(union, ...), nodes=(Any, ...)
    )
    return model


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


_GENERIC_NODE_KEYS = frozenset(Nodes.model_fields)
