"""The agent's process (agent/server.py) seen from outside: started in the background by the
command that connected cold (`spawn`), found by its lock (`running_pid`), and stopped before
`down` destroys the nodes (`stop`). Talking to it is remote/agent_client.py.

Standard library only: `dlvm exec` calls `spawn` on its way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from dlvm_cluster.remote.agent_client import request, socket_path
from dlvm_cluster.state import AGENT_LOCK, AGENT_LOG

LOCK_NAME = AGENT_LOCK
LOG_NAME = AGENT_LOG
MAX_SOCKET_PATH = 107  # bytes in a unix socket address (Linux)
MAX_LOG_BYTES = 1 << 20  # agent.log is started afresh beyond this
AGENT_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"}
    | {"DLVM_HOME", "DLVM_AGENT_IDLE"}
    # The agent starts the tunnels of nodes reached through a proxy command (gcloud's IAP
    # tunnel): they need the HTTPS proxy a corporate network routes through.
    | {"HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"}
)
# gcloud's own settings (its configuration directory, active configuration, account), which
# the tunnel of a private node reads.
AGENT_ENV_PREFIXES = ("LC_", "CLOUDSDK_")


def spawn(state_dir: Path) -> None:
    """Start the cluster's agent in the background and return at once: a process in its own
    session, its output appended to agent.log in the state dir. It connects to the nodes
    after this command is done; if an agent already runs, the new one exits at once."""
    import subprocess

    if len(os.fsencode(socket_path(state_dir))) > MAX_SOCKET_PATH:
        return  # no unix socket can be made there (a very long DLVM_HOME): always cold
    env = agent_environment(os.environ)
    log_path = state_dir / LOG_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        if log_path.stat().st_size > MAX_LOG_BYTES:
            flags |= os.O_TRUNC
    except OSError:
        pass
    try:
        log = os.open(log_path, flags, 0o600)
    except OSError:
        return
    try:
        subprocess.Popen(
            [sys.executable, "-m", "dlvm_cluster.agent", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    except OSError:
        pass  # warm connections are an optimisation: the next command runs cold
    finally:
        os.close(log)


def agent_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's whole environment: what it needs from ours and nothing else, since a
    long-lived process's environment is readable in /proc/PID/environ by whoever can read its
    memory, and the user's shell may hold secrets (a `from_env` secret, a cloud token).

    It keeps PATH, HOME, USER and LOGNAME (finding ~ for the key and the files to push),
    the locale (LANG, LANGUAGE, LC_*) and TZ (its log), TMPDIR, DLVM_HOME and
    DLVM_AGENT_IDLE (its own settings), what the IAP tunnels it starts read (CLOUDSDK_*, the
    HTTPS proxy), and PYTHONPATH with this package's root in front (so it runs this dlvm).
    It runs no Terraform and resolves no secret: DLVM_TERRAFORM and the like are left out."""
    return minimal_environment(environ)


def minimal_environment(
    environ: Mapping[str, str],
    *,
    names: Iterable[str] = (),
    prefixes: tuple[str, ...] = (),
) -> dict[str, str]:
    """A long-lived dlvm process's environment: the agent's names (AGENT_ENV_NAMES and those
    starting with AGENT_ENV_PREFIXES), those of `names` and those starting with one of
    `prefixes`, found in `environ`, and PYTHONPATH with this package's root in front."""
    wanted = AGENT_ENV_NAMES | set(names)
    kept = {
        name: value
        for name, value in environ.items()
        if name in wanted or name.startswith((*AGENT_ENV_PREFIXES, *prefixes))
    }
    package_root = str(Path(__file__).resolve().parents[2])
    path = environ.get("PYTHONPATH", "")
    kept["PYTHONPATH"] = package_root + (os.pathsep + path if path else "")
    return kept


def running_pid(state_dir: Path) -> int | None:
    """The pid of the cluster's agent if one holds its lock, else None."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop(state_dir: Path, wait: float = 20.0) -> bool:
    """Stop the cluster's agent if one runs: it stops whatever command it runs on the nodes
    (their whole process trees), closes its connections and exits. For `dlvm down`, before
    the nodes go. Returns True when no agent is left."""
    pid = running_pid(state_dir)
    if pid is None:
        return True
    answered = request(state_dir, {"op": "stop"}) is not None
    deadline = time.monotonic() + (wait if answered else 0.0)
    escalation = [signal.SIGTERM, signal.SIGKILL]
    while True:
        holder = running_pid(state_dir)
        if holder is None:
            return _gone(pid, timeout=2.0)
        if time.monotonic() >= deadline:
            if not escalation or holder <= 0:
                return False
            with contextlib.suppress(OSError):
                os.kill(holder, escalation.pop(0))
            deadline = time.monotonic() + 3.0
        time.sleep(0.05)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process: not gone, nor exited and waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[:1] != ["Z"]
