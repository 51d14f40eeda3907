"""`dlvm --help` stays cheap and whole: it imports neither rich (typer's rich help pulls in
rich.markdown, markdown_it and pygments) nor the command modules' heavy dependencies, and
each command's line in the list is its docstring's first paragraph, uncut."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from dlvm_cluster.cli.app import app

REPO = Path(__file__).resolve().parents[2]
HELP_MODULES = """
import atexit, sys
atexit.register(lambda: print("\\n".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["dlvm", "--help"]
from dlvm_cluster.cli.fast_path import main
main()
"""
NOT_FOR_HELP = ("rich", "markdown_it", "pygments", "pydantic", "ruamel", "paramiko")


def test_help_imports_no_rendering_or_heavy_modules() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", HELP_MODULES], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    loaded = {line.split(".")[0] for line in done.stderr.split()}
    assert not loaded & set(NOT_FOR_HELP), sorted(loaded & set(NOT_FOR_HELP))


def test_every_command_line_in_help_is_whole() -> None:
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert command.get_short_help_str(limit=45) == first, name
