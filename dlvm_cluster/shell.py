"""Shell quoting, shared by everything that builds shell text: remote commands (remote/) and
launch commands (launch/). Argv lists are quoted once, here; a word that already is shell
syntax says so by being ShellText."""

from __future__ import annotations

import re
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


_HOME = re.compile(r"\$\{HOME\}|\$HOME(?![A-Za-z0-9_])")


def home_expanded(value: str) -> str:
    """Shell text for `value` in which the node's shell expands the home directory and
    nothing else: `~` alone or followed by `/` at the start of the value or after a `:` (as
    in a shell assignment, so PATH-like lists work), and `$HOME` or `${HOME}` anywhere. Every
    other character, `$OTHER` included, stays literal."""
    pieces = []
    for piece in value.split(":"):
        text = []
        if piece == "~" or piece.startswith("~/"):
            text.append('"$HOME"')
            piece = piece[1:]
        at = 0
        for found in _HOME.finditer(piece):
            if found.start() > at:
                text.append(shlex.quote(piece[at : found.start()]))
            text.append('"$HOME"')
            at = found.end()
        if at < len(piece):
            text.append(shlex.quote(piece[at:]))
        pieces.append("".join(text))
    return ":".join(pieces) or "''"


def env_exports(env: Mapping[str, str]) -> str:
    """`export NAME=VALUE; ` for each variable, every value quoted but for the node's home
    (home_expanded), so that `~/work` or `$HOME/work` in the cluster file's env is the
    node's own folder whatever its user."""
    return "".join(f"export {name}={home_expanded(value)}; " for name, value in env.items())
