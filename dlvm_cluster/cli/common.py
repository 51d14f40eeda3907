"""What the command modules share: argument and option types, and confirmation. Arguments are
resolved in cli/resolve.py, --json documents built in cli/documents.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

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
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirm(question: str, yes: bool, *, otherwise: str = "") -> None:
    """Ask before something destructive; without a terminal, only --yes may say yes (the hint
    adds `otherwise`: what else the user can do). The question goes to stderr so that stdout
    stays the command's result."""
    if yes:
        return
    if not sys.stdin.isatty():
        from dlvm_cluster.errors import UsageError

        hint = "pass --yes to go ahead" + (f", or {otherwise}" if otherwise else "")
        raise UsageError(f"{question} (no terminal to ask on)", hint=hint)
    typer.confirm(question, abort=True, err=True)
