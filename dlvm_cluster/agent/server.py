"""The per-cluster agent: SSH connections to the nodes kept open between dlvm commands, like
OpenSSH's ControlPersist, so that a second `dlvm exec` or `dlvm sync` skips connecting.

    python -m dlvm_cluster.agent STATE_DIR

One agent per cluster (a flock on agent.lock; a second one exits at once). It opens one
connection per node (SshPool), then serves requests on the unix socket agent.sock in the state
dir (0600 in the 0700 dir: only the user reaches it); the protocol is described in
remote/agent_client.py; remote/agent_process.py starts (`spawn`) and stops (`stop`) it.
This module accepts, refuses and keeps count; the work of a request is in
agent/work.py: commands run through remote.fanout and files are pushed through
remote.sync exactly as over new connections (the same results, the same stop of every node's
process tree or transfer on a cancel, a timeout or a client that went away).

It exits, removing its socket, when:
- it was idle for DLVM_AGENT_IDLE seconds (default 300);
- the inventory file changed (`up`, `scale`): it finishes what it runs and exits, and the
  next command starts an agent for the new inventory;
- the inventory file is gone (`down`), it is asked to `stop`, or gets SIGTERM: it first stops
  what it runs on the nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from dlvm_cluster.agent.work import Client, Work, push_files, run_commands
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.records import open_pool
from dlvm_cluster.remote.agent_client import (
    ANSWER_TIMEOUT,
    Messages,
    encode,
    inventory_digest,
    socket_path,
)
from dlvm_cluster.remote.agent_process import LOCK_NAME
from dlvm_cluster.remote.fanout import Cancellation
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.state import ClusterState

IDLE_TIMEOUT = 300.0
POLL = 0.5  # how often the inventory and the idle time are checked
MAX_RUNNING = 4  # commands at once: each holds a session per node; sshd allows 10 (MaxSessions)
DRAIN_TIMEOUT = 30.0  # seconds running commands get to stop when the agent exits


def log(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} agent[{os.getpid()}]: {text}", flush=True)


def idle_timeout() -> float:
    try:
        value = float(os.environ.get("DLVM_AGENT_IDLE", IDLE_TIMEOUT))
    except ValueError:
        return IDLE_TIMEOUT
    return value if value > 0 else IDLE_TIMEOUT


class Agent:
    def __init__(self, state: ClusterState, *, idle: float) -> None:
        self.state = state
        self.idle = idle
        self.raw_inventory = state.inventory_path.read_bytes()
        self.digest = inventory_digest(self.raw_inventory)
        self.inventory = Inventory.from_json(json.loads(self.raw_inventory))
        self.pool: SshPool = open_pool(state, self.inventory)
        self._lock = threading.Lock()
        self._running: set[Cancellation] = set()
        self._threads: list[threading.Thread] = []
        self._last_used = time.monotonic()
        self._served = 0
        self._started = time.time()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._cancel_running = False
        self._terminated = False  # set by SIGTERM: only a flag, a handler must not take locks
        self._inventory_stat = _stat_key(state.inventory_path)
        self._socket_ino = 0

    # -- lifetime ----------------------------------------------------------------------------

    def connect(self) -> None:
        errors = self.pool.connect(self.inventory.nodes)
        for name, error in errors.items():
            log(f"{name}: {error}")
        log(f"connected to {len(self.inventory.nodes) - len(errors)} node(s)")

    def request_stop(self, reason: str, *, cancel_running: bool) -> None:
        """Stop serving; with `cancel_running`, also stop every command now running (their
        process trees on the nodes), else let them finish first."""
        with self._lock:
            if not self._stop.is_set():
                self._stop_reason = reason
            self._cancel_running = self._cancel_running or cancel_running
            if cancel_running:
                for cancel in self._running:
                    cancel.set("interrupted")
        self._stop.set()

    def terminate(self) -> None:
        """From a signal handler, which runs between any two steps of the main thread (maybe
        while it holds the lock): only flags; the main thread does the rest."""
        self._terminated = True
        self._stop.set()

    def serve(self) -> str:
        """Answer requests until a reason to exit; returns the reason."""
        path = socket_path(self.state.root)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead agent's: we hold the lock, so no live agent owns it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is made 0600, never wider even for a moment
        try:
            listener.bind(str(path))
        except OSError as exc:
            listener.close()
            self.pool.close()
            return f"cannot listen on {path}: {exc}"
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._socket_ino = path.stat().st_ino
        listener.listen(64)
        listener.settimeout(POLL)
        log(f"listening on {path} (idle timeout {self.idle:g}s)")
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    conn = None
                if conn is not None:
                    conn.settimeout(None)
                    thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                    thread.start()
                    self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                self._check()
        finally:
            listener.close()
            self._remove_socket()
        self._drain()
        self.pool.close()
        return self._stop_reason or "terminated"

    def _check(self) -> None:
        """Exit when idle, or when the inventory or the socket changed or went away."""
        with self._lock:
            busy = bool(self._running)
            idle_for = time.monotonic() - self._last_used
        if not busy and idle_for > self.idle:
            self.request_stop(f"idle for {self.idle:g}s", cancel_running=False)
            return
        key = _stat_key(self.state.inventory_path)
        if key is None:
            self.request_stop("the inventory is gone", cancel_running=True)
        elif key != self._inventory_stat:
            self._inventory_stat = key
            try:
                changed = inventory_digest(self.state.inventory_path.read_bytes()) != self.digest
            except OSError:
                changed = True
            if changed:
                self.request_stop("the inventory changed", cancel_running=False)
        if self._stop.is_set():
            return
        try:
            ours = socket_path(self.state.root).stat().st_ino == self._socket_ino
        except OSError:
            ours = False
        if not ours:
            self.request_stop("its socket was removed", cancel_running=True)

    def _remove_socket(self) -> None:
        path = socket_path(self.state.root)
        with contextlib.suppress(OSError):
            if path.stat().st_ino == self._socket_ino:
                path.unlink()

    def _drain(self) -> None:
        """Wait for the commands still running: cancelled ones for DRAIN_TIMEOUT at most;
        the others (the inventory changed) until they end, unless the inventory goes away
        or SIGTERM comes meanwhile."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            if self._terminated and not self._cancel_running:
                self.request_stop("terminated", cancel_running=True)
            if not self._cancel_running and _stat_key(self.state.inventory_path) is None:
                self.request_stop("the inventory is gone", cancel_running=True)
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            if not self._threads or (self._cancel_running and time.monotonic() > deadline):
                return
            if not self._cancel_running:
                deadline = time.monotonic() + DRAIN_TIMEOUT
            self._threads[0].join(POLL)

    # -- one client --------------------------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            messages = Messages(conn)
            try:
                conn.settimeout(5.0)
                request = messages.next()
                conn.settimeout(None)
            except (OSError, ValueError):
                return
            if request is None:
                return
            op = request.get("op")
            try:
                if op == "ping":
                    conn.sendall(encode(self._describe()))
                elif op == "stop":
                    self.request_stop("asked to stop", cancel_running=True)
                    conn.sendall(encode({"stopping": os.getpid()}))
                elif op == "run":
                    self._serve(conn, messages, request, run_commands(self.pool, request))
                elif op == "sync":
                    self._serve(conn, messages, request, push_files(self.pool, self.state, request))
                else:
                    conn.sendall(encode({"refused": f"unknown request {op!r}"}))
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "cluster": self.state.name,
                "inventory": self.digest,
                "running": len(self._running),
                "served": self._served,
                "started": self._started,
                "idle_timeout": self.idle,
            }

    def _refusal(self, request: dict[str, Any], work: Work | None) -> str:
        if self._stop.is_set():
            return "stopping"
        if request.get("inventory") != self.digest:
            return "serving another inventory"
        names = request.get("nodes")
        if work is None or not isinstance(names, list):
            return "malformed request"
        known = {node.name for node in self.inventory.nodes}
        if not set(names) <= known:
            return "unknown node(s)"
        if len(self._running) >= MAX_RUNNING:
            return "busy"
        return ""

    def _serve(
        self, conn: socket.socket, messages: Messages, request: dict[str, Any], work: Work | None
    ) -> None:
        """Accept or refuse; after the client's go, do `work` while a watcher turns the
        client's cancel (or its going away) into a cancellation; then send work's last
        message (after which the client closes: that is no cancellation)."""
        cancel = Cancellation()
        with self._lock:
            refusal = self._refusal(request, work)
            if not refusal:
                self._running.add(cancel)
        if refusal or work is None:  # no work: a malformed request, refused
            conn.sendall(encode({"refused": refusal}))
            return
        client = Client(conn, cancel)
        ran = False
        try:
            by_name = {node.name: node for node in self.inventory.nodes}
            nodes = [by_name[name] for name in request["nodes"]]
            conn.sendall(encode({"accepted": os.getpid()}))
            conn.settimeout(ANSWER_TIMEOUT)
            try:
                go = messages.next()
            except (OSError, ValueError):
                go = None
            if go is None or go.get("op") != "go":
                return  # the client gave up waiting and does the work itself
            conn.settimeout(None)
            ran = True
            started = time.monotonic()
            threading.Thread(target=client.watch, args=(messages,), daemon=True).start()
            summary, last = work(nodes, client, cancel)
            cancelled = " (cancelled)" if cancel.is_set() else ""
            client.send(last)
            log(f"{summary} in {time.monotonic() - started:.2f}s{cancelled}")
        finally:
            with self._lock:
                self._running.discard(cancel)
                self._served += int(ran)
                self._last_used = time.monotonic()


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _hold_lock(state_dir: Path) -> int | None:
    """The agent lock, with this pid written in it; None if another agent holds it."""
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dlvm_cluster.agent STATE_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    state = ClusterState(name=root.name, root=root)
    try:
        lock = _hold_lock(root)
    except OSError as exc:
        log(f"cannot use {root}: {exc}")
        return 1
    if lock is None:
        return 0  # another agent serves this cluster
    # The lock is never released by hand: the kernel does it when this process is gone, so
    # that `stop` (which waits for it) returns only once nothing of the agent is left.
    try:
        agent = Agent(state, idle=idle_timeout())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"no usable inventory in {root}: {exc}")
        return 1

    def on_term(signum: int, frame: FrameType | None) -> None:
        agent.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.connect()
    if _stat_key(state.inventory_path) != agent._inventory_stat:
        log("exiting: the inventory changed while connecting")
        agent.pool.close()
        return 0
    reason = agent.serve()
    log(f"exiting: {reason}")
    return 0
