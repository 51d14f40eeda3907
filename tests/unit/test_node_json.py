"""JSON from a node (remote/node_json.py): whatever comes, a value of the asked shape or
NodeJsonError, never another exception."""

from __future__ import annotations

import pytest

from dlvm_cluster.remote.node_json import (
    NodeJsonError,
    loads,
    loads_object,
    number,
    text,
    texts,
)

HOSTILE = [
    "[" * 200_000 + "]" * 200_000,  # RecursionError in json.loads
    "[" * 1990,  # a check line cut to 2000 characters
    '{"a": ' * 5000 + "1" + "}" * 5000,
    "",
    "{",
    "\x00",
    "NaN",
    '{"at": NaN}',
    '{"at": Infinity}',
    "1" * 70_000,  # past the size bound
    '"\\ud800"',  # a lone surrogate: valid JSON
    "[]",
    "3",
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_anything_a_node_sends_is_a_value_or_node_json_error(payload: str) -> None:
    try:
        data = loads_object(payload)
    except NodeJsonError:
        return
    assert isinstance(data, dict)


def test_depth_is_counted_outside_strings_only() -> None:
    assert loads('{"a": "[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 23}
    assert loads('["\\"[[[[[[[[[[[[[[[[[[[["]') == ['"' + "[" * 20]
    with pytest.raises(NodeJsonError, match="nested more than 3"):
        loads("[[[[1]]]]", max_depth=3)


def test_fields_are_checked_for_type_and_range() -> None:
    data = loads_object(
        '{"interval": 30, "at": 1e308, "flag": true, "busy": ["x", 1], "name": "n", "big": '
        + "9" * 400
        + "}"
    )
    assert number(data, "interval", low=1, high=3600) == 30.0
    for key in ("at", "flag", "big", "name", "missing"):
        with pytest.raises(NodeJsonError):
            number(data, key, low=0, high=1e12)
    assert number(data, "missing", low=0, high=1, default=None) is None
    assert text(data, "name") == "n"
    with pytest.raises(NodeJsonError):
        text(data, "interval")
    with pytest.raises(NodeJsonError):
        texts(data, "busy")
    assert texts(data, "nothing", default=()) == ()
