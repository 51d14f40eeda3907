"""Talking to a cluster's agent (remote/agent.py), which keeps SSH connections to the nodes
open between dlvm commands, like OpenSSH's ControlPersist.

Standard library only (and dlvm's own plain data types): a command over warm connections
must not pay for importing paramiko.

Protocol: newline-delimited JSON over the unix socket `agent.sock` in the cluster's state dir
(the socket 0600, the dir 0700: only the user reaches it). One request per connection:

    client -> {"op": "run", "inventory": DIGEST, "nodes": [NAME...], "commands": [TEXT...],
               "timeout": S | null, "fail_fast": BOOL}
    agent  -> {"accepted": PID}     or {"refused": WHY}: nothing was started, run it cold
    client -> {"op": "go"}          only now does the agent start: a client that gave up
                                    waiting for the answer (and runs cold) never has it
                                    run twice
    agent  -> {"node": NAME, "stream": "out" | "err", "text": LINE}     one per output line
    client -> {"op": "cancel"}      at any time (Ctrl-C); closing the connection does the same
    agent  -> {"results": [{node, rank, exit_code, error, duration, tail, timed_out}...],
               "first_failed": NAME}                                    the last message

`{"op": "sync", "inventory": DIGEST, "nodes": [NAME...], "delete": BOOL}` pushes the files
of the cluster's applied spec (read by the agent, which holds the connections and paramiko):
the same accept/go/cancel; the agent sends {"stage": TEXT}, {"count": [STEP, DONE, TOTAL,
UNIT]} and node lines as progress, then {"synced": [SyncResult...]}, {"error": MESSAGE,
"hint": HINT, "kind": ERROR CLASS} or {"cancelled": true}.

`{"op": "ping"}` answers what the agent is (pid, inventory digest, connections opened,
commands served); `{"op": "stop"}` makes it cancel whatever it runs and exit.

Commands arrive already wrapped (env, PID report): the agent knows nothing of specs or env.
Secrets are masked here, in the client, and never sent: a secret taken from the user's
environment may differ from one command to the next, and the long-lived agent never holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dlvm_cluster.errors import DlvmError, RemoteError, StateError, UsageError
from dlvm_cluster.inventory import Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.results import CommandResult, GroupResult, SyncResult

SOCKET_NAME = "agent.sock"
LOCK_NAME = "agent.lock"
LOG_NAME = "agent.log"
ANSWER_TIMEOUT = 3.0  # seconds an agent may take to accept or refuse a request
MAX_SOCKET_PATH = 107  # bytes in a unix socket address (Linux)
MAX_LOG_BYTES = 1 << 20  # agent.log is started afresh beyond this
LineSink = Callable[[Node, str, str], None]


def disabled() -> bool:
    """DLVM_NO_AGENT=1: every command connects anew and no agent is started."""
    return os.environ.get("DLVM_NO_AGENT", "") not in ("", "0")


def inventory_digest(raw: bytes) -> str:
    """Names the inventory an agent serves: a request for another one is refused."""
    return hashlib.sha256(raw).hexdigest()


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Messages:
    """Reads newline-delimited JSON from a socket. Its own buffer, not a file object: an
    interrupt (Ctrl-C) during a read must not lose the part of a line already received."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def next(self) -> dict[str, Any] | None:
        """The next message; None at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError(f"not a message: {line[:100]!r}")
                return message
            data = self._sock.recv(65536)
            if not data:
                return None
            self._buffer += data


def _connect(state_dir: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        sock.connect(str(socket_path(state_dir)))
    except OSError:
        sock.close()
        return None
    return sock


def request(state_dir: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send one request and return the agent's one answer; None if no agent answered."""
    sock = _connect(state_dir)
    if sock is None:
        return None
    with sock:
        try:
            sock.sendall(encode(message))
            return Messages(sock).next()
        except (OSError, ValueError):
            return None


def ping(state_dir: Path) -> dict[str, Any] | None:
    """What the cluster's agent says about itself, or None if none answers."""
    return request(state_dir, {"op": "ping"})


def run(
    state_dir: Path,
    digest: str,
    nodes: Sequence[Node],
    commands: Sequence[str],
    *,
    sink: LineSink,
    timeout: float | None = None,
    fail_fast: bool = False,
    make_log_dir: Callable[[], Path] | None = None,
    redact: Callable[[str], str] = str,
) -> GroupResult | None:
    """Run commands[i] on nodes[i] through the agent, as remote.fanout.run_on_nodes does over
    new connections: the same lines to `sink`, logs, results, and Ctrl-C behaviour (every
    node's process tree is stopped, then KeyboardInterrupt is raised).

    None: no agent took the request (none running, busy, or serving another inventory), so
    nothing was started and the caller runs the command itself."""
    request = {
        "op": "run",
        "inventory": digest,
        "nodes": [node.name for node in nodes],
        "commands": list(commands),
        "timeout": timeout,
        "fail_fast": fail_fast,
    }
    by_name = {node.name: node for node in nodes}
    with contextlib.ExitStack() as stack:
        logs: dict[str, IO[str]] = {}

        def open_logs() -> None:  # only once the agent runs it: a refusal leaves no files
            log_dir = None if make_log_dir is None else make_log_dir()
            logs.update(stack.enter_context(_logs(log_dir, nodes)))

        def line(message: dict[str, Any]) -> None:
            node = by_name[message["node"]]
            text = redact(str(message["text"]))
            log = logs.get(node.name)
            if log is not None:
                log.write(text + "\n")
            sink(node, str(message["stream"]), text)

        final = _exchange(
            state_dir, request, {"node": line}, ends=("results",), on_accepted=open_logs
        )
    if final is _REFUSED:
        return None
    return _group_result(final, nodes, redact)


def sync(
    state_dir: Path, digest: str, nodes: Sequence[Node], progress: Progress, *, delete: bool
) -> list[SyncResult] | None:
    """Push the cluster's files (its applied spec) to `nodes` through the agent, with the same
    progress, results and errors as remote.sync over new connections. Ctrl-C stops the push
    on every node, then raises KeyboardInterrupt. None: no agent took the request."""
    request = {
        "op": "sync",
        "inventory": digest,
        "nodes": [node.name for node in nodes],
        "delete": delete,
    }
    by_name = {node.name: node for node in nodes}
    handlers: dict[str, Callable[[dict[str, Any]], None]] = {
        "stage": lambda message: progress.stage(str(message["stage"])),
        "note": lambda message: progress.note(str(message["note"])),
        "count": lambda message: progress.count(*_count_args(message["count"])),
        "node": lambda message: progress.line(
            by_name[message["node"]], str(message["stream"]), str(message["text"])
        ),
    }
    final = _exchange(state_dir, request, handlers, ends=("synced", "error", "cancelled"))
    if final is _REFUSED:
        return None
    if final is None or "cancelled" in final:
        raise RemoteError("lost: the dlvm agent stopped before the sync finished")
    if "error" in final:
        raise error_from(final)
    return [SyncResult(**item) for item in final["synced"]]


def _count_args(value: Any) -> tuple[str, int, int, str]:
    step, done, total, unit = value
    return str(step), int(done), int(total), str(unit)


def error_message(error: DlvmError) -> dict[str, Any]:
    """A DlvmError as a message, so that the client raises the same error as a cold run."""
    return {"error": error.message, "hint": error.hint, "kind": type(error).__name__}


def error_from(message: dict[str, Any]) -> DlvmError:
    kinds = {kind.__name__: kind for kind in (RemoteError, StateError, UsageError)}
    kind = kinds.get(str(message.get("kind")), DlvmError)
    return kind(str(message["error"]), hint=str(message.get("hint", "")))


_REFUSED: dict[str, Any] = {"refused": True}  # no agent took the request: nothing was started
Handlers = dict[str, Callable[[dict[str, Any]], None]]


def _exchange(
    state_dir: Path,
    request: dict[str, Any],
    handlers: Handlers,
    *,
    ends: Sequence[str],
    on_accepted: Callable[[], None] = lambda: None,
) -> dict[str, Any] | None:
    """Send `request`; once the agent accepts, say go and hand each message to the handler
    named by its first matching key, until one carrying a key of `ends` (returned). _REFUSED:
    not accepted (no agent, busy, another inventory). None: the agent went away first.

    The first Ctrl-C asks the agent to cancel and waits for its last answer (it stops
    everything on the nodes first); then KeyboardInterrupt is raised. A second Ctrl-C ends
    this process at once, and the agent cancels on its own when the connection drops."""
    sock = _connect(state_dir)
    if sock is None:
        return _REFUSED
    with sock:
        messages = Messages(sock)
        try:
            sock.sendall(encode(request))
            answer = messages.next()
            if answer is None or "accepted" not in answer:
                return _REFUSED
            on_accepted()
            sock.sendall(encode({"op": "go"}))
        except (OSError, ValueError):
            return _REFUSED
        sock.settimeout(None)  # work may run for hours
        interrupted = False
        final: dict[str, Any] | None = None
        while final is None:
            try:
                message = messages.next()
                if message is None:
                    break
                if any(key in message for key in ends):
                    final = message
                    continue
                for key, handle in handlers.items():
                    if key in message:
                        handle(message)
                        break
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    with contextlib.suppress(OSError):
                        sock.sendall(encode({"op": "cancel"}))
            except (OSError, ValueError, KeyError, TypeError):
                break  # the agent went away or spoke nonsense: what finished is reported
        if interrupted:
            raise KeyboardInterrupt
        return final


@contextlib.contextmanager
def _logs(log_dir: Path | None, nodes: Sequence[Node]) -> Iterator[dict[str, IO[str]]]:
    """One log file per node (as the cold path keeps them), written by this process."""
    logs: dict[str, IO[str]] = {}
    try:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            for node in nodes:
                logs[node.name] = open(log_dir / f"{node.name}.log", "w", encoding="utf-8")  # noqa: SIM115
        yield logs
    finally:
        for log in logs.values():
            log.close()


def _group_result(
    final: dict[str, Any] | None, nodes: Sequence[Node], redact: Callable[[str], str]
) -> GroupResult:
    reported = {str(item["node"]): item for item in (final or {}).get("results", [])}
    results = []
    for node in nodes:
        result = CommandResult(node=node.name, rank=node.rank)
        item = reported.get(node.name)
        if item is None:
            result.error = "lost: the dlvm agent stopped before the command finished"
        else:
            code = item.get("exit_code")
            result.exit_code = None if code is None else int(code)
            result.error = str(item.get("error", ""))
            result.duration = float(item.get("duration", 0.0))
            result.timed_out = bool(item.get("timed_out", False))
            result.tail.extend(redact(str(line)) for line in item.get("tail", []))
        results.append(result)
    first_failed = str((final or {}).get("first_failed", ""))
    return GroupResult(tuple(results), first_failed=first_failed)


def spawn(state_dir: Path) -> None:
    """Start the cluster's agent in the background and return at once: a process in its own
    session, its output appended to agent.log in the state dir. It connects to the nodes
    after this command is done; if an agent already runs, the new one exits at once."""
    import subprocess

    if len(os.fsencode(socket_path(state_dir))) > MAX_SOCKET_PATH:
        return  # no unix socket can be made there (a very long DLVM_HOME): always cold
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
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
            [sys.executable, "-m", "dlvm_cluster.remote.agent", str(state_dir)],
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
