"""What the command modules share: argument and option types, and confirmation. Arguments are
resolved in cli/resolve.py, --json documents built in cli/documents.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dlvm_cluster.providers.base import UnpinnedHostKeys

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

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """`2h`, `30m`, `90s`, `1h30m` as seconds; anything else is a usage error (exit 2)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise typer.BadParameter(f"{text!r} is not a duration such as 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise typer.BadParameter("the wait must be longer than 0s")
    return float(total)


WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        parser=parse_duration,
        metavar="DURATION",
        help="How long each new VM may take to be created, e.g. 30m or 2h (gcp; flex-start nodes "
        "wait this long for capacity, all of them at once). Default: 30m.",
        show_default=False,
    ),
]


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


def trust_host_keys(unseen: UnpinnedHostKeys, *, json_output: bool) -> None:
    """Show the host keys machines presented for the first time and ask whether to trust
    them. Without a terminal, or with --json, nobody can check them: refuse, saying how to
    accept them."""
    from dlvm_cluster.errors import UsageError

    if json_output or not sys.stdin.isatty():
        raise UsageError(
            f"{unseen.message} (not trusted without asking)",
            hint="check the fingerprints, then pass --yes to trust them, or write each host's "
            "key as host_key in the cluster file",
        )
    for node in unseen.nodes:
        typer.echo(
            f"  {node.name} {node.ip}:{node.port} presents {node.host_key_fingerprint}", err=True
        )
    typer.confirm("Trust these host keys?", abort=True, err=True)
