"""Shell quoting, shared by everything that builds shell text: remote commands (remote/) and
launch commands (launch/). Argv lists are quoted once, here; a word that already is shell
syntax says so by being ShellText."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence


class ShellText(str):
    """A word put into a command as it is, because it already is shell syntax."""

    __slots__ = ()


def join(argv: Sequence[str]) -> str:
    """Like shlex.join, but ShellText words go in unquoted."""
    return " ".join(word if isinstance(word, ShellText) else shlex.quote(word) for word in argv)


def quote_path(path: str) -> str:
    """Quote a remote path, keeping a leading ~ so the remote shell expands it."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def env_exports(env: Mapping[str, str]) -> str:
    """`export NAME=VALUE; ` for each variable, every value quoted."""
    return "".join(f"export {name}={shlex.quote(value)}; " for name, value in env.items())
