"""A spec error about a secret env value names the field but never repeats the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlvm_cluster.errors import SpecError
from dlvm_cluster.providers import load_spec_text

BASE = "name: demo\nprovider: {kind: local}\nnodes: {count: 1}\nenv:\n"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("TOKEN: {value: 987654321, secret: true}", "env.TOKEN.value"),
        ("TOKEN: {value: [987654321], secret: true}", "env.TOKEN.value"),
        ("TOKEN: {value: 987654321}", "env.TOKEN.value"),
        ("TOKEN: {value: '987654321', secret: 987654321}", "env.TOKEN.secret"),
        ("TOKEN: {from_env: 987654321}", "env.TOKEN.from_env"),
        ("TOKEN: {from_env: '987654321-x'}", "env.TOKEN.from_env"),
        ("TOKEN: {value: 987654321, secret: false}", "env.TOKEN.value"),
    ],
)
def test_the_value_under_a_secret_is_never_shown(entry: str, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE + f"  {entry}\n", Path("cluster.yaml"))
    error = caught.value
    assert error.field == field
    assert error.location is not None and error.location.line == 5
    assert "987654321" not in str(error) and "987654321" not in error.hint


def test_a_plain_value_is_still_shown() -> None:
    """Plain env values are no secret: their errors keep saying what was found."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE + "  N: [a]\n  M: 2024-01-01\n", Path("cluster.yaml"))
    assert "got" in str(caught.value)
