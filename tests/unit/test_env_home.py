"""The cluster file's env values reach the node literally but for the node's home: `~` at
the start or after `:` and `$HOME`/`${HOME}` anywhere, as a real shell expands the exports."""

from __future__ import annotations

import subprocess

import pytest

from dlvm_cluster.shell import env_exports


@pytest.mark.parametrize(
    ("value", "seen"),
    [
        ("~/work/shim", "/home/u/work/shim"),
        ("~", "/home/u"),
        ("$HOME/y", "/home/u/y"),
        ("${HOME}/y:~/z:/opt/~/keep", "/home/u/y:/home/u/z:/opt/~/keep"),
        ("a~b", "a~b"),
        ("~other/x", "~other/x"),
        ("$HOMEX/$OTHER/`id`/$(id)", "$HOMEX/$OTHER/`id`/$(id)"),
        ('it\'s "quoted" \\ ; & |', 'it\'s "quoted" \\ ; & |'),
        ("", ""),
        ("::", "::"),
        ("line1\nline2", "line1\nline2"),
    ],
)
def test_exports_expand_only_the_home(value: str, seen: str) -> None:
    done = subprocess.run(
        ["sh", "-c", env_exports({"V": value}) + 'printf %s "$V"'],
        env={"HOME": "/home/u", "PATH": "/usr/bin:/bin", "OTHER": "no"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == seen
