"""What the command modules share: argument and option types, confirmation, loading a cluster
file, and the two output modes for scripts (--json) and for logs (--quiet)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from dlvm_cluster.spec.model import LoadedSpec

ClusterArg = Annotated[
    str, typer.Argument(help="The cluster's name, or the path of its YAML file.")
]
FileArg = Annotated[Path, typer.Argument(help="The cluster YAML file.")]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (for scripts) instead of text."),
]
# Commands whose nodes print (setup, a job) say where that output goes with --json.
JsonRunOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout (for scripts) instead of text; the nodes' "
        "output goes to stderr.",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only the summary."),
]


def print_json(data: Any) -> None:
    """The one document a --json command prints: plain stdout, never rich (no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def confirm(question: str, yes: bool) -> None:
    """Ask before something destructive; without a terminal, only --yes may say yes. The
    question goes to stderr so that stdout stays the command's result."""
    if yes:
        return
    if not sys.stdin.isatty():
        from dlvm_cluster.errors import UsageError

        raise UsageError(f"{question} (no terminal to ask on)", hint="pass --yes to go ahead")
    typer.confirm(question, abort=True, err=True)


def load(path: Path) -> LoadedSpec:
    from dlvm_cluster.spec.load import load_spec

    return load_spec(path)
