"""Talking to a cluster's agent (agent/server.py), which keeps SSH connections to the nodes
open between dlvm commands, like OpenSSH's ControlPersist.

Standard library only (and dlvm's own plain data types): a command over warm connections
must not pay for importing paramiko.

Protocol: newline-delimited JSON over the unix socket `agent.sock` in the cluster's state dir
(the socket 0600, the dir 0700: only the user reaches it). One request per connection:

    client -> {"op": "run", "inventory": DIGEST, "nodes": [NAME...], "commands": [TEXT...],
               "timeout": S | null, "fail_fast": BOOL, "stdin": BASE64 | null}
    agent  -> {"accepted": PID}     or {"refused": WHY}: nothing was started, run it cold
    client -> {"op": "go"}          only now does the agent start: a client that gave up
                                    waiting for the answer (and runs cold) never has it
                                    run twice
    agent  -> {"node": NAME, "stream": "out" | "err", "text": LINE}     one per output line
    client -> {"op": "cancel"}      at any time (Ctrl-C); closing the connection does the same
    agent  -> {"results": GROUP}   the last message; GROUP is GroupResult.to_json(), as
                                    `exec --json` prints it (remote/results.py)

`{"op": "sync", "inventory": DIGEST, "nodes": [NAME...], "delete": BOOL, "delete_at_most": N}`
(N: a node with more files to delete deletes none, listing them; null: no limit) pushes the files
of the cluster's applied spec (read by the agent, which holds the connections and paramiko):
the same accept/go/cancel; the agent sends {"stage": TEXT}, {"count": [STEP, DONE, TOTAL,
UNIT]} and node lines as progress, then {"synced": [SyncResult...]}, {"error": MESSAGE,
"hint": HINT, "kind": ERROR CLASS} or {"cancelled": true}.

`{"op": "ping"}` answers what the agent is (pid, inventory digest, connections opened,
commands served); `{"op": "stop"}` makes it cancel whatever it runs and exit.

Commands arrive already wrapped (env, PID report): the agent knows nothing of specs or env.
`stdin`, when given, is what every command reads on its standard input, then closed: how
`up` hands nodes their keys and secrets files through a warm agent (remote/relay.py); the
agent passes it on and keeps nothing of it. Secrets are masked here, in the client: a
secret taken from the user's environment may differ from one command to the next, and the
long-lived agent never holds one between requests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dlvm_cluster.errors import DlvmError, RemoteError, StateError, UsageError
from dlvm_cluster.inventory import Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.results import (
    CommandResult,
    GroupResult,
    LineSink,
    SyncResult,
    node_results,
)
from dlvm_cluster.state import AGENT_SOCKET

SOCKET_NAME = AGENT_SOCKET
ANSWER_TIMEOUT = 3.0  # seconds an agent may take to accept or refuse a request


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
    stdin: bytes | None = None,
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
        "stdin": None if stdin is None else base64.b64encode(stdin).decode(),
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
    state_dir: Path,
    digest: str,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    delete: bool,
    delete_at_most: int | None = None,
) -> list[SyncResult] | None:
    """Push the cluster's files (its applied spec) to `nodes` through the agent, with the same
    progress, results and errors as remote.sync over new connections. Ctrl-C stops the push
    on every node, then raises KeyboardInterrupt. None: no agent took the request."""
    request = {
        "op": "sync",
        "inventory": digest,
        "nodes": [node.name for node in nodes],
        "delete": delete,
        "delete_at_most": delete_at_most,
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
    data = (final or {}).get("results") or {}
    reported = node_results(data)
    results = []
    for node in nodes:
        result = reported.get(node.name)
        if result is None:
            result = CommandResult(node=node.name, rank=node.rank)
            result.error = "lost: the dlvm agent stopped before the command finished"
        else:  # secrets are masked here, never by the agent
            tail = [redact(line) for line in result.tail]
            result.tail.clear()
            result.tail.extend(tail)
        results.append(result)
    return GroupResult(tuple(results), first_failed=str(data.get("first_failed") or ""))
