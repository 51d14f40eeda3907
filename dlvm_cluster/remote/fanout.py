"""Run a command on many nodes at once, streaming their output line by line.

One thread per node (bounded); the calling thread only waits, so Ctrl-C reaches it and is
turned into a cancel event: every node's remote process tree is then stopped before this
returns. A node that stops answering (partition, dead host) is detected by an SSH
keepalive that expects a reply, and is reported without holding the others up.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.remote.command import PID_MARKER, kill_tree
from dlvm_cluster.remote.connection import Connection, paramiko
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.results import CommandResult, GroupResult, LineSink, discard_line

MAX_PARALLEL = 128
LIVENESS_IDLE = 5.0  # seconds of silence before asking the node whether it is still there
LIVENESS_TIMEOUT = 10.0  # seconds a node may take to answer that question
MAX_LINE_BYTES = 1 << 20
"""The longest line kept whole: output without a newline for longer is shown in pieces of
this size, never buffered without end."""


class Cancellation:
    """Tells every node's run to stop, and why (shown as that node's result)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class _NodeRun:
    """The run of one command on one node."""

    def __init__(
        self,
        node: Node,
        pool: SshPool,
        command: str,
        *,
        sink: LineSink,
        timeout: float | None,
        cancel: Cancellation,
        log: IO[str] | None,
        redact: Callable[[str], str],
        stdin: bytes | None = None,
    ) -> None:
        self.node = node
        self.pool = pool
        self.command = command
        self.sink = sink
        self.timeout = timeout
        self.cancel = cancel
        self.log = log
        self.redact = redact
        self.stdin = stdin
        self.result = CommandResult(node=node.name, rank=node.rank)
        self.pid: int | None = None
        self._partial = {"out": b"", "err": b""}

    def run(self) -> CommandResult:
        start = time.monotonic()
        try:
            connection = self.pool.get(self.node)
            try:
                channel = connection.channel()
            except RemoteError:
                # A connection kept open between commands (the agent's) may have died quietly
                # (node rebooted): connect once more before reporting the node.
                connection.close()
                connection = self.pool.get(self.node)
                channel = connection.channel()
            channel.exec_command(self.command)
            if self.stdin is not None:
                if self.stdin:
                    channel.sendall(self.stdin)
                channel.shutdown_write()
            self._pump(connection, channel, start)
        except RemoteError as exc:
            self.result.error = f"unreachable: {exc}"
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.result.error = f"connection lost: {exc}"
        self.result.duration = time.monotonic() - start
        for stream in ("out", "err"):
            self._feed(stream, b"", final=True)
        return self.result

    def _pump(self, connection: Connection, channel: paramiko.Channel, start: float) -> None:
        last_heard = time.monotonic()
        while True:
            if self.cancel.is_set():
                self._stop(connection, channel)
                self.result.error = self.cancel.reason
                return
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                self._stop(connection, channel)
                self.result.error = f"timed out after {self.timeout:g}s"
                self.result.timed_out = True
                return
            if channel.eof_received:  # no more output can come: only the exit status
                channel.status_event.wait(0.2)
            else:
                select.select([channel], [], [], 0.2)
            heard = False
            while channel.recv_ready():
                self._feed("out", channel.recv(65536))
                heard = True
            while channel.recv_stderr_ready():
                self._feed("err", channel.recv_stderr(65536))
                heard = True
            if heard:
                last_heard = time.monotonic()
            elif channel.exit_status_ready():
                self.result.exit_code = channel.recv_exit_status()
                channel.close()
                return
            elif channel.closed or not connection.alive:
                self.result.error = "connection closed before the command finished"
                return
            elif time.monotonic() - last_heard > LIVENESS_IDLE:
                if not _answers(connection):
                    connection.close()
                    self.result.error = f"lost: no answer for {LIVENESS_TIMEOUT:g}s"
                    return
                last_heard = time.monotonic()

    def _stop(self, connection: Connection, channel: paramiko.Channel) -> None:
        """Stop the remote process tree (TERM, then KILL), over a second channel."""
        deadline = time.monotonic() + 2.0
        while self.pid is None and time.monotonic() < deadline and not channel.exit_status_ready():
            if channel.recv_stderr_ready():
                self._feed("err", channel.recv_stderr(65536))
            time.sleep(0.05)
        if self.pid is not None and not channel.exit_status_ready():
            stopper = None
            try:
                stopper = connection.channel()
                stopper.exec_command(kill_tree(self.pid))
                stopper.settimeout(15.0)
                stopper.recv_exit_status()
            except (RemoteError, paramiko.SSHException, OSError, EOFError):
                pass
            finally:
                if stopper is not None:
                    stopper.close()
        channel.close()

    def _feed(self, stream: str, data: bytes, *, final: bool = False) -> None:
        buffer = self._partial[stream] + data
        lines = buffer.split(b"\n")
        partial = b"" if final else lines.pop()
        while len(partial) > MAX_LINE_BYTES:
            lines.append(partial[:MAX_LINE_BYTES])
            partial = partial[MAX_LINE_BYTES:]
        self._partial[stream] = partial
        for raw in lines:
            if final and not raw:
                continue
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if stream == "err" and self.pid is None and text.startswith(PID_MARKER):
                self.pid = marked_pid(text)
                if self.pid is not None:
                    continue
            text = self.redact(text)
            self.result.tail.append(text)
            if self.log is not None:
                self.log.write(text + "\n")
            self.sink(self.node, stream, text)


def marked_pid(line: str) -> int | None:
    """The PID in a PID_MARKER line, or None when what follows the marker is no PID (the
    node's shell init may print anything, a marker too): then the line is ordinary output.
    PID 1 is a node's init, never a command's shell: stopping its tree would stop the node."""
    number = line[len(PID_MARKER) :]
    if not (number.isascii() and number.isdigit() and len(number) <= 10) or int(number) <= 1:
        return None
    return int(number)


def _answers(connection: Connection) -> bool:
    """Ask the node for a reply; False if none comes within LIVENESS_TIMEOUT."""
    answered = threading.Event()

    def ask() -> None:
        try:
            connection.transport.global_request("keepalive@openssh.com", wait=True)
            answered.set()
        except (paramiko.SSHException, OSError, EOFError):
            pass

    threading.Thread(target=ask, daemon=True).start()
    return answered.wait(LIVENESS_TIMEOUT)


def each_its_own(nodes: Sequence[Node], commands: Sequence[str]) -> Callable[[Node], str]:
    """The command function for run_on_nodes that gives nodes[i] commands[i]."""
    by_name = dict(zip((node.name for node in nodes), commands, strict=True))
    return lambda node: by_name[node.name]


def run_on_nodes(
    pool: SshPool,
    nodes: Sequence[Node],
    command_for: Callable[[Node], str],
    *,
    sink: LineSink = discard_line,
    timeout: float | None = None,
    log_dir: Path | None = None,
    fail_fast: bool = False,
    redact: Callable[[str], str] = str,
    cancel: Cancellation | None = None,
    on_done: Callable[[CommandResult], None] = lambda result: None,
    stdin: bytes | None = None,
) -> GroupResult:
    """Run each node's command at once; returns when all are done. Ctrl-C stops every node's
    process tree, then raises KeyboardInterrupt; a second Ctrl-C raises at once. With
    `fail_fast`, the first node to fail stops the others (their result says so). `redact`
    masks secrets in every line before it is shown, kept or logged. Setting `cancel` from
    another thread stops every node's process tree too, but returns their results (each
    with the reason given) instead of raising: how the agent serves a client's Ctrl-C.
    `on_done` gets each node's result as it ends (progress per node), in this thread.
    `stdin`: what every command reads on its standard input, which is then closed (None:
    left open, unused).

    When the pool goes through the cluster's agent (`pool.relay`) and the run needs nothing
    the agent's protocol lacks (no log files kept here, no cancellation from another
    thread), the agent runs it over its warm connections; the pool connects only if the
    agent does not take it."""
    if pool.relay is not None and log_dir is None and cancel is None:
        relayed = pool.relay.run(
            pool.inventory,
            nodes,
            [command_for(node) for node in nodes],
            sink=sink,
            timeout=timeout,
            fail_fast=fail_fast,
            redact=redact,
            stdin=stdin,
        )
        if relayed is not None:
            for result in relayed.results:
                on_done(result)
            return relayed
    cancel = Cancellation() if cancel is None else cancel
    logs: list[IO[str]] = []
    runs = []
    for node in nodes:
        log: IO[str] | None = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            # appended to: a job restarted after a failure keeps one log per node
            log = open(log_dir / f"{node.name}.log", "a", encoding="utf-8")  # noqa: SIM115
            logs.append(log)
        runs.append(
            _NodeRun(
                node,
                pool,
                command_for(node),
                sink=sink,
                timeout=timeout,
                cancel=cancel,
                log=log,
                redact=redact,
                stdin=stdin,
            )
        )
    executor = ThreadPoolExecutor(max_workers=max(1, min(len(runs), MAX_PARALLEL)))
    try:
        futures: list[Future[CommandResult]] = [executor.submit(run.run) for run in runs]
        first_failure: list[str] = []

        def finished(future: Future[CommandResult]) -> None:
            result = future.result()
            on_done(result)
            if fail_fast and not result.ok and not cancel.is_set():
                first_failure.append(result.node)
                cancel.set(f"stopped: {result.node} failed first")

        try:
            _wait_all(futures, finished)
        except KeyboardInterrupt:
            cancel.set("interrupted")
            _wait_all(futures)  # a second Ctrl-C escapes from here
            raise
        executor.shutdown()
        results = tuple(future.result() for future in futures)
        return GroupResult(results, first_failed=first_failure[0] if first_failure else "")
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        for log in logs:
            log.close()


def _wait_all(
    futures: list[Future[CommandResult]],
    finished: Callable[[Future[CommandResult]], None] | None = None,
) -> None:
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        if finished is not None:
            for future in done:
                finished(future)
