"""What the command modules share: argument types, confirmation, loading a cluster file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dlvm_cluster.spec.model import LoadedSpec

ClusterArg = Annotated[
    str, typer.Argument(help="The cluster's name, or the path of its YAML file.")
]
FileArg = Annotated[Path, typer.Argument(help="The cluster YAML file.")]


def confirm(question: str, yes: bool) -> None:
    """Ask before something destructive; without a terminal, only --yes may say yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        from dlvm_cluster.errors import UsageError

        raise UsageError(f"{question} (no terminal to ask on)", hint="pass --yes to go ahead")
    typer.confirm(question, abort=True)


def load(path: Path) -> LoadedSpec:
    from dlvm_cluster.spec import load_spec

    return load_spec(path)
