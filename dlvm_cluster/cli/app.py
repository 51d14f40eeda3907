"""`dlvm`: the typer app. Commands parse arguments, call the orchestrator, render results."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer

from dlvm_cluster.cli import (
    cluster_commands,
    job_commands,
    node_commands,
    power_commands,
    status_commands,
    watch_commands,
)
from dlvm_cluster.errors import DlvmError

app = typer.Typer(
    name="dlvm",
    help="One YAML file becomes a cluster of GPU VMs: create it, run on it, tear it down.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Plain help (click's layout, the same text): typer's rich help imports rich.markdown,
    # markdown_it and pygments, which made `dlvm --help` cost ~2.6x `import typer`.
    rich_markup_mode=None,
)

_debug = False
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C or SIGTERM


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


def _register(name: str, command: Callable[..., None]) -> None:
    """Add a command; its docstring's first paragraph is its line in `dlvm --help` (given
    whole: click would cut it at 45 characters)."""
    summary = " ".join((command.__doc__ or "").split("\n\n")[0].split())
    app.command(name=name, short_help=summary)(command)


# The commands, in the order `dlvm --help` lists them.
_register("up", cluster_commands.up_cmd)
_register("plan", cluster_commands.plan_cmd)
_register("render", cluster_commands.render_cmd)
_register("status", status_commands.status_cmd)
_register("top", watch_commands.top_cmd)
_register("dashboard", watch_commands.dashboard_cmd)
_register("exec", node_commands.exec_cmd)
_register("sync", node_commands.sync_cmd)
_register("check", node_commands.check_cmd)
_register("launch", job_commands.launch_cmd)
_register("logs", job_commands.logs_cmd)
_register("cancel", job_commands.cancel_cmd)
_register("scale", cluster_commands.scale_cmd)
_register("schema", cluster_commands.schema_cmd)
_register("doctor", status_commands.doctor_cmd)
_register("ssh", node_commands.ssh_cmd)
_register("ssh-config", node_commands.ssh_config_cmd)
_register("stop", power_commands.stop_cmd)
_register("start", power_commands.start_cmd)
_register("autostop", power_commands.autostop_cmd)
_register("down", cluster_commands.down_cmd)


def _tell(text: str) -> None:
    """A line on stderr; rich is imported only then (`dlvm --help` never needs it)."""
    from dlvm_cluster.cli.display import stderr

    stderr.print(text)


def main() -> NoReturn:
    """Run the typer app; the `dlvm` entry point (cli/fast_path.py) has installed the Ctrl-C
    handlers already."""
    try:
        code = app(standalone_mode=False)
    except DlvmError as error:
        if _debug:
            raise
        from dlvm_cluster.cli.display import print_error

        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        _tell("interrupted")
        sys.exit(INTERRUPTED)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        _tell("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (missing argument, bad option)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _tell(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    if code == INTERRUPTED:  # typer turns a Ctrl-C into this exit code, silently
        _tell("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
