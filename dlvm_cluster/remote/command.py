"""Remote command text: built in one place and quoted once.

Every remote command runs as `sh -c` in the login shell sshd starts; it first reports its
PID (the session and process group leader sshd made), so that an interrupt or timeout can
stop its whole process tree, then exports the environment and changes directory. Quoting
is shell.py's.
"""

from __future__ import annotations

from collections.abc import Mapping

from dlvm_cluster.shell import env_exports, quote_path

PID_MARKER = "\x1edlvm-pid "
# Secret env values live on each node in a 0600 file, written through stdin; every command
# sources it first, so secrets never appear on a command line.
SOURCE_SECRETS = '[ -r "$HOME/.dlvm/secrets.env" ] && . "$HOME/.dlvm/secrets.env"; '
INSTALL_SECRETS = (
    "umask 077; mkdir -p ~/.dlvm && cat > ~/.dlvm/secrets.env.tmp && "
    "mv ~/.dlvm/secrets.env.tmp ~/.dlvm/secrets.env"
)


def wrap(command: str, env: Mapping[str, str], workdir: str | None = None) -> str:
    """The text sent to sshd: report the PID, export env, cd, run `command` (shell syntax)."""
    cd = f"cd {quote_path(workdir)} && " if workdir else ""
    return f"printf '{PID_MARKER}%s\\n' $$ >&2; {SOURCE_SECRETS}{env_exports(env)}{cd}{command}"


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
