"""The fast path (cli/fast_path.py) and the typer app must not drift: every option the app
gives `exec` and `sync` is either read by the fast path, the same way (flag or value), or
listed as left to the app; and the fast path reads no option the app does not have."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from dlvm_cluster.cli import fast_path
from dlvm_cluster.cli.app import app

VERBS = sorted(fast_path._FLAGS)


def _app_options(verb: str) -> dict[str, Any]:
    """Each spelling of each option of the app's command (`-n` and `--nodes`), but --help.
    (click objects: typer carries its own copy of click, so they are read by attribute.)"""
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    found = {}
    for param in command.params:
        if param.param_type_name == "option":
            for spelling in [*param.opts, *param.secondary_opts]:
                found[spelling] = param
    found.pop("--help", None)
    return found


def test_the_fast_path_serves_exactly_exec_and_sync() -> None:
    assert VERBS == sorted(fast_path._VALUES) == sorted(fast_path.TO_THE_APP) == ["exec", "sync"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_app_option_is_served_or_left_to_the_app(verb: str) -> None:
    app_options = _app_options(verb)
    flags, values = set(fast_path._FLAGS[verb]), set(fast_path._VALUES[verb])
    left = set(fast_path.TO_THE_APP[verb])
    assert not (flags | values) & left, "an option both served and left to the app"
    assert not set(app_options) - (flags | values | left), "app options the fast path ignores"
    assert not (flags | values | left) - set(app_options), "fast path options the app lacks"
    for spelling in flags:
        assert app_options[spelling].is_flag, f"{spelling} takes a value in the app"
    for spelling in values:
        assert not app_options[spelling].is_flag, f"{spelling} is a flag in the app"


@pytest.mark.parametrize("verb", VERBS)
def test_each_left_option_really_goes_to_the_app(verb: str) -> None:
    for spelling in fast_path.TO_THE_APP[verb]:
        option = _app_options(verb)[spelling]
        words = [spelling] if option.is_flag else [spelling, "x"]
        tail = ["--", "true"] if verb == "exec" else []
        assert fast_path.parse([verb, "c", *words, *tail]) is None, spelling


@pytest.mark.parametrize("verb", VERBS)
def test_spellings_of_one_option_fill_the_same_field(verb: str) -> None:
    """`-n` and `--nodes` are one app option: the fast path must read them alike."""
    by_param: dict[str, set[str]] = {}
    served = {**fast_path._FLAGS[verb], **{k: v[0] for k, v in fast_path._VALUES[verb].items()}}
    for spelling, option in _app_options(verb).items():
        if spelling in served:
            by_param.setdefault(str(option.name), set()).add(served[spelling])
    assert all(len(fields) == 1 for fields in by_param.values()), by_param
