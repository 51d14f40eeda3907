"""Remote command text: built in one place and quoted once.

Every remote command runs as `sh -c` in the login shell sshd starts; it first reports its
PID (the session and process group leader sshd made), so that an interrupt or timeout can
stop its whole process tree, then exports the environment and changes directory. Quoting
is shell.py's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dlvm_cluster.inventory import node_dir
from dlvm_cluster.shell import env_exports, quote_path

PID_MARKER = "\x1edlvm-pid "
HELD_SECRETS_TIMEOUT = 30.0  # seconds a node may take to run held_secrets
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def secrets_file(cluster: str) -> str:
    """Secret env values live on each node in a 0600 file of the cluster's own folder,
    written through stdin; every command sources it first, so secrets never appear on a
    command line."""
    return f"{node_dir(cluster)}/secrets.env"


def source_secrets(cluster: str) -> str:
    path = quote_path(secrets_file(cluster))
    return f"[ -r {path} ] && . {path}; "


def install_secrets(cluster: str) -> str:
    """Writes stdin as the cluster's secrets file, atomically, readable by the user alone."""
    folder, path = quote_path(node_dir(cluster)), quote_path(secrets_file(cluster))
    return f"umask 077; mkdir -p {folder} && cat > {path}.tmp && mv {path}.tmp {path}"


def held_secrets(cluster: str, names: Sequence[str]) -> str:
    """Prints, after sourcing the cluster's secrets file as every command does, one line per
    name: the variable's value in hex (empty when unset), so that any value reads back
    exactly, newlines included. Meant to run through `wrap`."""
    bad = [name for name in names if not _ENV_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"bad variable names {bad!r}")
    hexed = "".join(
        f"printf '%s' \"${{{name}-}}\" | od -An -v -tx1 | tr -d ' \\n'; echo; " for name in names
    )
    return hexed + "true"


def wrap(command: str, env: Mapping[str, str], workdir: str | None = None, *, cluster: str) -> str:
    """The text sent to sshd: report the PID, source the cluster's secrets, export env, cd,
    run `command` (shell syntax)."""
    cd = f"cd {quote_path(workdir)} && " if workdir else ""
    pid = f"printf '{PID_MARKER}%s\\n' $$ >&2; "
    return f"{pid}{source_secrets(cluster)}{env_exports(env)}{cd}{command}"


def kill_tree(pid: int, grace: float = 3.0) -> str:
    """Shell text that stops process `pid`, its process group and all its descendants:
    SIGTERM first, SIGKILL after `grace` seconds for whatever is left. Prints what it killed."""
    return (
        f"root={pid}; "
        "tree() { ps -e -o pid= -o ppid= -o pgid= | awk -v r=$root '"
        "{p[$1]=$2; g[$1]=$3} END {s[r]=1; for (k in g) if (g[k]==r) s[k]=1; "
        "c=1; while (c) {c=0; for (k in p) if (!(k in s) && (p[k] in s)) {s[k]=1; c=1}} "
        "for (k in s) print k}'; }; "
        "first=$(tree); kill -TERM $first 2>/dev/null; "
        f"i=0; while [ $i -lt {int(grace * 10)} ]; do "
        "left=''; for p in $first $(tree); do kill -0 $p 2>/dev/null && left=\"$left $p\"; done; "
        '[ -z "$left" ] && break; sleep 0.1; i=$((i+1)); done; '
        "kill -KILL $first $(tree) 2>/dev/null; true"
    )
