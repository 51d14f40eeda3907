"""Which command lines the fast path (cli/fast_path.py) serves itself. Anything it does not
recognise exactly must go to the full app, which has the whole option set and the help."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlvm_cluster.cli.fast_path import parse


@pytest.mark.parametrize(
    ("argv", "verb", "fields"),
    [
        (["exec", "c", "--", "true"], "exec", {"cluster": "c", "command": ("true",)}),
        (
            ["exec", "-n", "0,2", "c", "--timeout", "5", "-q", "--", "echo", "a b"],
            "exec",
            {"selector": "0,2", "timeout": 5.0, "quiet": True, "command": ("echo", "a b")},
        ),
        (
            ["exec", "c", "--nodes=node-1", "--", "ls", "--", "-l"],
            "exec",
            {"command": ("ls", "--", "-l")},
        ),
        (["sync", "c"], "sync", {"cluster": "c"}),
        (["sync", "c", "-n", "1-2", "--quiet"], "sync", {"selector": "1-2", "quiet": True}),
    ],
)
def test_served_forms(argv: list[str], verb: str, fields: dict[str, object]) -> None:
    parsed = parse(argv)
    assert parsed is not None and parsed[0] == verb
    for name, value in fields.items():
        assert getattr(parsed[1], name) == value, name


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["exec"],
        ["exec", "c", "true"],  # no `--`: the app decides what the words mean
        ["exec", "c", "--"],  # no command
        ["exec", "--", "true"],  # no cluster
        ["exec", "c", "d", "--", "true"],  # two clusters
        ["exec", "c", "--timeout", "soon", "--", "true"],
        ["exec", "c", "--timeout", "--", "true"],
        ["exec", "c", "--json", "--", "true"],
        ["exec", "c", "--help", "--", "true"],
        ["exec", "c", "-qn0", "--", "true"],
        ["exec", "c", "--nodes=", "--", "true"],
        ["exec", "c.yaml", "--", "true"],  # a cluster file: the app loads it
        ["--debug", "exec", "c", "--", "true"],
        ["sync", "c", "--down"],
        ["sync", "c", "--json"],
        ["sync", "c", "--delete"],  # it may ask before deleting: the app's confirmation
        ["sync", "c", "--delete", "--yes"],
        ["sync", "c", "-n"],
        ["status", "c"],
    ],
)
def test_everything_else_goes_to_the_app(argv: list[str]) -> None:
    assert parse(argv) is None


def test_an_existing_file_named_like_the_cluster_goes_to_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mycluster").write_text("name: mycluster\n")
    monkeypatch.chdir(tmp_path)
    assert parse(["sync", "mycluster"]) is None
    assert parse(["sync", "other"]) is not None
