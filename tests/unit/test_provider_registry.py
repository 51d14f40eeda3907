"""The provider registry: each kind's keys are its own (a key of another kind is refused at
load, naming the kinds that take it), its load-time rules run with file:line, and what it
lacks is refused before a verb, in its own words and with its exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from dlvm_cluster import providers
from dlvm_cluster.errors import ProvisionError, SpecError, UsageError
from dlvm_cluster.providers import registry
from dlvm_cluster.providers.kind import Feature, ProviderKind, Refusal
from dlvm_cluster.spec.kinds import Problem, SpecKind
from dlvm_cluster.spec.model import ClusterSpec, Nodes, ProviderConfig
from dlvm_cluster.state import ClusterState

# A file each registered kind accepts, as small as the kind allows: a kind added to the
# registry must add its own here (the first test fails until it does).
MINIMAL: dict[str, dict[str, Any]] = {
    "local": {"kind": "local"},
    "ssh": {"kind": "ssh", "hosts": [{"host": "10.0.0.1"}, {"host": "10.0.0.2"}]},
    "gcp": {
        "kind": "gcp",
        "project": "my-project",
        "region": "us-central1",
        "zones": ["us-central1-a"],
        "allowed_ssh_cidrs": ["203.0.113.0/24"],
    },
    "aws": {
        "kind": "aws",
        "region": "us-east-1",
        "zones": ["us-east-1a"],
        "allowed_ssh_cidrs": ["203.0.113.0/24"],
    },
}


def _file(tmp_path: Path, provider: dict[str, Any], nodes: dict[str, Any]) -> Path:
    path = tmp_path / "c.yaml"
    with path.open("w") as stream:
        YAML().dump({"name": "demo", "provider": provider, "nodes": nodes}, stream)
    return path


def test_every_registered_kind_has_a_minimal_file(tmp_path: Path) -> None:
    assert set(MINIMAL) == set(registry.KINDS)
    for provider in MINIMAL.values():
        assert providers.load_spec(_file(tmp_path, provider, {"count": 2})).spec.nodes.count == 2


def _foreign_keys(section: str) -> list[tuple[str, str, list[str]]]:
    """(kind, key, the kinds that take it) for each key of another kind the kind refuses."""
    cases = []
    for name, entry in registry.KINDS.items():
        own = entry.spec.node_keys if section == "nodes" else entry.spec.config_keys
        others = [other for other in registry.KINDS.values() if other.name != name]
        for other in others:
            theirs = other.spec.node_keys if section == "nodes" else other.spec.config_keys
            for key in sorted(theirs - own):
                takers = [kind for kind, e in registry.KINDS.items() if key in _keys(e, section)]
                cases.append((name, key, takers))
    return sorted(set((kind, key, tuple(takers)) for kind, key, takers in cases))  # type: ignore[misc]


def _keys(entry: ProviderKind, section: str) -> frozenset[str]:
    return entry.spec.node_keys if section == "nodes" else entry.spec.config_keys


@pytest.mark.parametrize("section", ["nodes", "provider"])
def test_a_key_of_another_kind_is_refused_naming_who_takes_it(section: str, tmp_path: Path) -> None:
    cases = _foreign_keys(section)
    assert cases, "the built-in kinds have keys of their own"
    for kind, key, takers in cases:
        provider = dict(MINIMAL[kind])
        nodes: dict[str, Any] = {"count": 1}
        (nodes if section == "nodes" else provider)[key] = "x"
        path = _file(tmp_path, provider, nodes)
        with pytest.raises(SpecError) as caught:
            providers.load_spec(path)
        error = caught.value
        assert error.exit_code == 2
        assert error.field == f"{section}.{key}"
        assert error.location is not None and error.location.line > 1
        assert f"is not a {section} key of kind {kind}" in str(error), str(error)
        assert all(taker in str(error) for taker in takers), str(error)


def test_the_brief_cases_of_gcp_keys_on_local_and_ssh(tmp_path: Path) -> None:
    # The keys the clouds share name both; max_run_hours is Compute Engine's alone.
    for kind, key, value, takers in [
        ("local", "provisioning", "spot", "kinds gcp, aws take"),
        ("local", "reservation", "my-res", "kinds gcp, aws take"),
        ("local", "machine_type", "a3-highgpu-8g", "kinds gcp, aws take"),
        ("local", "disk_type", "pd-ssd", "kinds gcp, aws take"),
        ("ssh", "max_run_hours", 5, "kind gcp takes"),
        ("ssh", "spot", True, "kinds gcp, aws take"),
        ("ssh", "image", "pytorch-2-9-cu129-ubuntu-2204-nvidia-580", "kinds gcp, aws take"),
    ]:
        path = _file(tmp_path, MINIMAL[kind], {"count": 1, key: value})
        with pytest.raises(SpecError, match=f"only {takers} it"):
            providers.load_spec(path)


def test_flex_start_on_local_is_refused_as_a_gcp_key_not_a_gcp_rule(tmp_path: Path) -> None:
    path = _file(tmp_path, MINIMAL["local"], {"count": 1, "provisioning": "flex-start"})
    with pytest.raises(SpecError) as caught:
        providers.load_spec(path)
    assert "Compute Engine" not in str(caught.value)
    assert caught.value.hint == "remove it, or use provider kind gcp or aws"


def test_unknown_kinds_are_listed_from_the_registry(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        providers.load_spec(_file(tmp_path, {"kind": "azure"}, {"count": 1}))
    assert f"must be one of {', '.join(registry.KINDS)} (got 'azure')" in str(caught.value)


def test_ssh_refusals_keep_their_words_and_exit_codes() -> None:
    with pytest.raises(UsageError) as stop:
        providers.require("ssh", Feature.STOP_START, verb="stop")
    assert str(stop.value) == (
        "dlvm cannot stop the machines of an ssh cluster: it does not own them"
    )
    assert stop.value.exit_code == 2
    with pytest.raises(ProvisionError) as replace:
        providers.require("ssh", Feature.REPLACE, names="node-1")
    assert str(replace.value).startswith("node-1 cannot be replaced: the ssh provider adopts")
    assert replace.value.exit_code == 3
    with pytest.raises(UsageError, match="the ssh provider does not mount storage"):
        providers.require("ssh", Feature.STORAGE)
    lacking = providers.lacking("ssh", Feature.AUTOSTOP)
    assert lacking is not None and "dlvm does not own these machines" in lacking.message


def test_local_and_gcp_have_every_verb() -> None:
    verbs = [Feature.STOP_START, Feature.REPLACE, Feature.STORAGE, Feature.AUTOSTOP]
    for kind in ("local", "gcp"):
        for feature in verbs:
            providers.require(kind, feature, verb="stop", names="node-1")
    assert providers.lacking("gcp", Feature.PRICES) is None
    assert providers.lacking("local", Feature.PRICES) is not None


def test_a_state_dir_of_an_unknown_kind_is_refused_in_words() -> None:
    with pytest.raises(UsageError, match="no provider of kind 'mars'"):
        providers.for_kind("mars", ClusterState("c", Path("/nowhere")))


# A kind made here and registered only for the tests below: one config, one nodes key, one
# rule and one refusal, with nothing outside this file changed.
class DemoConfig(ProviderConfig):
    kind: Literal["demo"]
    zone: str = "z1"


class DemoNodes(Nodes):
    flavour: str | None = None


def demo_rules(spec: ClusterSpec) -> list[Problem]:
    assert isinstance(spec.nodes, DemoNodes)
    if spec.nodes.flavour == "sour" and spec.nodes.count > 1:
        return [(("nodes", "flavour"), "sour nodes come one at a time")]
    return []


DEMO = ProviderKind(
    spec=SpecKind("demo", DemoConfig, DemoNodes, demo_rules),
    implementation="dlvm_cluster.providers.local:NamespaceNodes",
    lacks={Feature.STOP_START: Refusal("demo machines never {verb}", hint="use another kind")},
)


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> ProviderKind:
    monkeypatch.setitem(registry.KINDS, "demo", DEMO)
    return DEMO


def test_a_kind_registered_in_one_line_gets_its_keys_rules_and_refusals(
    demo: ProviderKind, tmp_path: Path
) -> None:
    loaded = providers.load_spec(_file(tmp_path, {"kind": "demo"}, {"count": 2, "flavour": "x"}))
    assert isinstance(loaded.spec.nodes, DemoNodes) and loaded.spec.nodes.flavour == "x"
    assert isinstance(loaded.spec.provider, DemoConfig)
    # its rule, at the line of the key
    path = _file(tmp_path, {"kind": "demo"}, {"count": 2, "flavour": "sour"})
    with pytest.raises(SpecError) as caught:
        providers.load_spec(path)
    assert caught.value.field == "nodes.flavour"
    assert caught.value.location is not None and caught.value.location.line == 6
    # its key refused for the others, naming it
    with pytest.raises(SpecError, match="only kind demo takes it"):
        providers.load_spec(_file(tmp_path, MINIMAL["local"], {"count": 1, "flavour": "x"}))
    # and theirs for it
    with pytest.raises(SpecError, match="only kinds gcp, aws take it"):
        providers.load_spec(_file(tmp_path, {"kind": "demo"}, {"count": 1, "spot": True}))
    # its refusal, before any verb
    with pytest.raises(UsageError, match="demo machines never stop"):
        providers.require("demo", Feature.STOP_START, verb="stop")
    # the applied spec read back from the state dir is of its models again
    again = providers.spec_kinds().parse(loaded.spec.model_dump(mode="json"))
    assert again == loaded.spec and isinstance(again.nodes, DemoNodes)
    # the schema names it, and dispatch builds its implementation
    schema = providers.spec_kinds().json_schema()
    assert "DemoConfig" in schema["$defs"] and "DemoNodes" in schema["$defs"]
    built = providers.for_spec(loaded.spec, ClusterState("demo", tmp_path))
    assert type(built).__name__ == "NamespaceNodes" and built.spec == loaded.spec


def test_kinds_that_lack_a_feature_declare_why(demo: ProviderKind) -> None:
    for entry in registry.KINDS.values():
        for feature, refusal in entry.lacks.items():
            assert isinstance(feature, Feature)
            assert refusal.message, f"{entry.name} lacks {feature} without saying why"
    assert not DEMO.has(Feature.STOP_START) and DEMO.has(Feature.STORAGE)


def test_spec_kinds_follow_the_registry(demo: ProviderKind) -> None:
    assert providers.spec_kinds().names == list(registry.KINDS)
    assert providers.kinds() == list(registry.KINDS)


def test_an_applied_spec_of_an_older_dlvm_reads_back_without_other_kinds_keys() -> None:
    """Before each kind's keys were its own, a local cluster's applied spec held every
    `nodes:` key (with no effect): it still reads, and nothing of gcp's is kept."""
    old = {
        "name": "c",
        "provider": {"kind": "local"},
        "nodes": {"count": 2, "machine_type": None, "spot": False, "disk_gb": 200},
    }
    spec = providers.spec_kinds().parse(old)
    assert spec.nodes.count == 2 and set(spec.nodes.model_dump()) == {"count", "accelerator"}
    with pytest.raises(ValidationError):  # a key of no kind is still an error
        providers.spec_kinds().parse({**old, "nodes": {"count": 2, "gpus": 1}})
