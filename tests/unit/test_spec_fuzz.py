"""Property tests: whatever the text, the loader either succeeds or raises SpecError, quickly.

Three sources of input: YAML-looking text built from the tokens YAML treats specially, random
bytes, and random nested structures (free-form, or a valid spec with one part replaced)
dumped to YAML. Each example must finish within the hypothesis deadline.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from dlvm_cluster.errors import SpecError
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.spec.model import LoadedSpec

PATH = Path("fuzz.yaml")
FUZZ = settings(
    max_examples=200,
    deadline=2000,  # milliseconds per example
    database=None,  # no .hypothesis directory left in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

TOKENS = [
    "name: demo\n",
    "provider:\n",
    "  kind: local\n",
    "  kind: ssh\n",
    "  hosts:\n",
    "    - {host: a}\n",
    "nodes:\n",
    "  count: 3\n",
    "env:\n",
    "  A: 1\n",
    "files:\n",
    "  - {src: ., dst: ~/w}\n",
    "job:\n",
    "  command: x\n",
    "  procs_per_node: auto\n",
    "setup: |\n  echo hi\n",
    "name",
    "count",
    "kind",
    ": ",
    ":",
    "- ",
    "? ",
    "  ",
    "\n",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!python/name:os.system ",
    "!x ",
    "'",
    '"',
    "\\",
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "|",
    ">-",
    "~",
    "null",
    "true",
    "0x1f",
    "1e999",
    "-7",
    ".nan",
    "2024-01-01",
    "<<: ",
    "\x00",
    "\x07",
    "\ufeff",
    "\u2028",
    "é",
    "DLVM_X",
    "[/bold]",
]

yamlish = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=60).map("".join)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["local", "ssh", "gcp", "auto", "torchrun", "demo", ".", "~", "1:4", ""])
)
keys = st.sampled_from(
    [
        "name",
        "provider",
        "kind",
        "hosts",
        "host",
        "port",
        "nodes",
        "count",
        "accelerator",
        "env",
        "files",
        "src",
        "dst",
        "exclude",
        "setup",
        "job",
        "framework",
        "command",
        "procs_per_node",
        "nnodes",
        "DLVM_X",
        "cuont",
    ]
) | st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)

VALID: dict[str, Any] = {
    "name": "demo",
    "provider": {"kind": "ssh", "hosts": [{"host": "a", "port": 22}, {"host": "b"}]},
    "nodes": {"count": 2, "accelerator": {"type": "t4", "count": 1}},
    "env": {"A": "1"},
    "files": [{"src": ".", "dst": "~/w", "exclude": ["*.pyc"]}],
    "setup": "echo hi",
    "job": {"framework": "torchrun", "command": "x", "procs_per_node": "auto"},
}


def dump(value: Any) -> str:
    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.dump(value, stream)
    return stream.getvalue()


def check(raw: str | bytes) -> None:
    try:
        loaded = load_spec_text(raw, PATH)
    except SpecError as error:
        assert error.location is not None, str(error)
        assert error.location.file == str(PATH)
        assert error.location.line >= 1
        assert error.location.column >= 1
        assert "\n" not in str(error)
    else:
        assert isinstance(loaded, LoadedSpec)


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """The valid spec with one value somewhere inside replaced, deleted or joined by a key."""
    spec = copy.deepcopy(VALID)
    node: Any = spec
    while True:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        key, child = draw(st.sampled_from(children))
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = draw(values)
        elif action == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[draw(keys)] = draw(values)
        else:
            node.append(draw(values))
        return spec


def test_the_unmutated_spec_is_valid() -> None:
    assert load_spec_text(dump(VALID), PATH).spec.nodes.count == 2


@FUZZ
@given(yamlish)
def test_yaml_looking_text(text: str) -> None:
    check(text)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(values)
def test_random_structures(value: Any) -> None:
    check(dump(value))


@FUZZ
@given(mutated_specs())
def test_mutated_specs(spec: Any) -> None:
    check(dump(spec))
