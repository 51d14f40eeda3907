"""`dlvm`: the typer app. Commands parse arguments, call the orchestrator, render results."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from dlvm_cluster.cli import cluster_commands, job_commands, node_commands
from dlvm_cluster.cli.display import print_error, stderr
from dlvm_cluster.errors import DlvmError

app = typer.Typer(
    name="dlvm",
    help="One YAML file becomes a cluster of GPU VMs: create it, run on it, tear it down.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)

_debug = False
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C or SIGTERM


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


# The commands, in the order `dlvm --help` lists them.
app.command()(cluster_commands.up)
app.command()(cluster_commands.plan)
app.command()(cluster_commands.render)
app.command()(cluster_commands.status)
app.command(name="exec")(node_commands.exec_)
app.command()(node_commands.sync)
app.command()(job_commands.launch)
app.command()(job_commands.logs)
app.command()(job_commands.cancel)
app.command()(cluster_commands.scale)
app.command()(cluster_commands.schema)
app.command()(cluster_commands.doctor)
app.command()(node_commands.ssh)
app.command(name="ssh-config")(node_commands.ssh_config)
app.command()(cluster_commands.down)


def main() -> NoReturn:
    """Run the typer app; the `dlvm` entry point (cli/fast_path.py) has installed the Ctrl-C
    handlers already."""
    try:
        code = app(standalone_mode=False)
    except DlvmError as error:
        if _debug:
            raise
        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(INTERRUPTED)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        stderr.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (missing argument, bad option)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            stderr.print(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    if code == INTERRUPTED:  # typer turns a Ctrl-C into this exit code, silently
        stderr.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
