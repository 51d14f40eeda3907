"""The fast path: `dlvm exec NAME [-n SEL] [--timeout S] [-q] -- CMD...` and
`dlvm sync NAME [-n SEL] [-q]` without importing typer (or, for exec, rich,
pydantic and ruamel).

These are the commands users repeat in a loop. Over the warm connections of the cluster's
agent, importing the full app was most of their time (~0.1-0.2 s of ~0.3 s); over new
connections it was a fifth of a small cluster's. Only these exact forms are recognised;
anything else (other options, --help, --debug, a YAML path) returns None, and the full app
(cli/app.py) runs the command. Both resolve the cluster with cli/resolve.py into a `Cluster`
(light: making one reads nothing), call the same orchestrate functions with it and print the
same summaries (cli/summaries.py). Every option the app
gives exec and sync is either read here or listed in TO_THE_APP (a unit test checks both ways).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dlvm_cluster.cli.resolve import is_cluster_file, resolve
from dlvm_cluster.errors import DlvmError


@dataclass(frozen=True)
class _Args:
    cluster: str
    selector: str | None = None
    timeout: float | None = None
    quiet: bool = False
    command: tuple[str, ...] = ()


# Per command: flags, and options taking a value (with how to read it).
_FLAGS = {
    "exec": {"-q": "quiet", "--quiet": "quiet"},
    "sync": {"-q": "quiet", "--quiet": "quiet"},
}
_VALUES: dict[str, dict[str, tuple[str, Callable[[str], object]]]] = {
    "exec": {
        "-n": ("selector", str),
        "--nodes": ("selector", str),
        "--timeout": ("timeout", float),
    },
    "sync": {"-n": ("selector", str), "--nodes": ("selector", str)},
}
# The app's options of these commands that the fast path leaves to the app (with --help).
TO_THE_APP = {
    "exec": frozenset({"--json"}),
    # --delete may ask before deleting: the app's confirmation, not the fast path's.
    "sync": frozenset({"--down", "--remote", "--local", "--json", "--delete", "--yes", "-y"}),
}


def parse(argv: Sequence[str]) -> tuple[str, _Args] | None:
    """(verb, arguments) for a command line the fast path serves, else None."""
    if len(argv) < 2 or argv[0] not in _FLAGS:
        return None
    verb, words = argv[0], list(argv[1:])
    command: tuple[str, ...] = ()
    if verb == "exec":
        if "--" not in words:
            return None
        split = words.index("--")
        words, command = words[:split], tuple(argv[split + 2 :])
        if not command:
            return None
    found: dict[str, object] = {}
    cluster = None
    values = iter(words)
    for word in values:
        name, equals, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if word in _FLAGS[verb]:
            found[_FLAGS[verb][word]] = True
        elif name in _VALUES[verb]:
            field, convert = _VALUES[verb][name]
            text = inline if equals else next(values, None)
            if not text:
                return None
            try:
                found[field] = convert(text)
            except ValueError:
                return None
        elif word.startswith("-") or cluster is not None:
            return None
        else:
            cluster = word
    if cluster is None or is_cluster_file(cluster):
        return None  # a cluster file: the full app loads it
    return verb, _Args(cluster=cluster, command=command, **found)  # type: ignore[arg-type]


def serve(argv: Sequence[str]) -> int | None:
    """The exit code of a command served here; None: not one of ours (nothing ran)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    verb, args = parsed
    try:
        return _exec(args) if verb == "exec" else _sync(args)
    except DlvmError as error:  # as the full app reports it
        from dlvm_cluster.cli.display import print_error

        print_error(error)
        return error.exit_code


def _exec(args: _Args) -> int:
    from dlvm_cluster.cli.summaries import exec_summary
    from dlvm_cluster.orchestrate.nodes.commands import exec_command
    from dlvm_cluster.progress import NodeLines

    show = NodeLines(show=not args.quiet)
    with resolve(args.cluster) as cluster:
        result = exec_command(
            cluster, " ".join(args.command), show, selector=args.selector, timeout=args.timeout
        )
    return exec_summary(result, quiet=args.quiet)


def _sync(args: _Args) -> int:
    from dlvm_cluster.cli.display import console_progress
    from dlvm_cluster.cli.summaries import sync_summary
    from dlvm_cluster.orchestrate.nodes.commands import sync_up

    with resolve(args.cluster) as cluster, console_progress(quiet=args.quiet) as progress:
        results = sync_up(cluster, progress, selector=args.selector)
    sync_summary(results)
    return 0


def main() -> None:
    """The `dlvm` program: the fast path when it serves the command line, else the app."""
    from dlvm_cluster.cli.interrupts import install

    install()
    try:
        code = serve(sys.argv[1:])
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    if code is not None:
        sys.exit(code)
    from dlvm_cluster.cli.app import main as app_main

    app_main()
