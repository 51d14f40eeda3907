"""One SSH connection to one node, opened with the pinned host key and fast algorithms.

paramiko's Transport is used directly (not SSHClient) so the key exchange can be chosen:
curve25519 costs a fraction of OpenSSH's default post-quantum exchange on these machines
(../shared/reference/baselines.md), and the host key is compared with the pinned one, never
trusted on first use.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# paramiko imports `invoke` only to run the `Match exec` lines of ssh_config files, which dlvm
# never reads; that import is about half of paramiko's (~50-100 ms on every dlvm command that
# talks to nodes). Keep it out while paramiko loads; `import invoke` still works afterwards.
# This is the one place paramiko is imported: the other modules take it from here
# (`from dlvm_cluster.remote.connection import paramiko`), whichever of them loads first.
_SKIP_INVOKE = "invoke" not in sys.modules
if _SKIP_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko as paramiko
finally:
    if _SKIP_INVOKE:
        del sys.modules["invoke"]

# dlvm reports SSH failures itself, with the node they concern: paramiko's own log lines
# (a traceback on stderr when a tunnel ends before the SSH banner) would only repeat them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

from dlvm_cluster.errors import RemoteError  # noqa: E402
from dlvm_cluster.inventory import Node, fingerprint  # noqa: E402

CONNECT_TIMEOUT = 10.0
# How much of what a tunnel (a node's proxy command) writes to stderr is kept for errors.
PROXY_MESSAGE_LIMIT = 2000
MAX_OUTPUT = 16 << 20
"""The most a short command's stdout may send (Connection.run): a node that sends more is
refused, never buffered without end."""
MAX_ERRORS = 64 << 10
"""What is kept of a command's stderr: the start of it (where the error is); the rest is read
and dropped, so that a node filling stderr cannot stall the command's stdout."""
_CHUNK = 1 << 16
FAST_KEX = ("curve25519-sha256@libssh.org", "curve25519-sha256")
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


class HostKeyMismatch(RemoteError):
    """The node presented a different host key than the one pinned at provisioning."""


@dataclass(frozen=True)
class Credentials:
    key_path: Path

    def load(self) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(self.key_path)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise RemoteError(
                f"cannot load the SSH key {self.key_path}: {exc}",
                hint="check the file (an unencrypted OpenSSH private key is expected)",
            ) from exc


class Connection:
    """An authenticated SSH transport to one node; channels are opened on it per command."""

    def __init__(self, node: Node, transport: paramiko.Transport) -> None:
        self.node = node
        self.transport = transport
        self._lock = threading.Lock()

    @classmethod
    def open(cls, node: Node, key: paramiko.PKey, timeout: float = CONNECT_TIMEOUT) -> Connection:
        transport = paramiko.Transport(_open_socket(node, timeout))
        options = transport.get_security_options()
        options.kex = _prefer(options.kex, FAST_KEX)
        options.ciphers = _prefer(options.ciphers, FAST_CIPHERS)
        options.key_types = _prefer(options.key_types, (node.host_key.split()[0],))
        try:
            transport.start_client(timeout=timeout)
            _verify_host_key(node, transport.get_remote_server_key())
            transport.auth_publickey(node.user, key)
        except HostKeyMismatch:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            said = _proxy_said(transport.sock)
            transport.close()
            raise RemoteError(
                f"{node.name} ({node.ip}:{node.port}): SSH failed: {exc}{said}"
            ) from exc
        transport.set_keepalive(15)
        return cls(node, transport)

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def channel(self) -> paramiko.Channel:
        try:
            return self.transport.open_session(timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(f"{self.node.name}: cannot open a session: {exc}") from exc

    def run(
        self, command: str, stdin: bytes = b"", *, limit: int = MAX_OUTPUT
    ) -> tuple[int, str, str]:
        """Run a short command to completion: (exit code, stdout, stderr). Data that must not
        appear in a process list (keys, secrets) goes through `stdin`, never the command.
        stdout is refused past `limit` bytes; stderr is read beside it, its start kept."""
        channel = self.channel()
        try:
            channel.exec_command(command)
            errors = StderrReader(channel)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out = read_bounded(channel.recv, limit)
            if out is None:
                raise RemoteError(
                    f"{self.node.name}: sent more than {limit} bytes of output to a short command",
                    hint="the node is misbehaving: look at it with `dlvm ssh`",
                )
            return channel.recv_exit_status(), out.decode(errors="replace"), errors.text()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(f"{self.node.name}: connection lost: {exc}") from exc
        finally:
            channel.close()

    def close(self) -> None:
        self.transport.close()


class _Tunnel(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, with the tunnel's stderr drained as it comes (a tunnel that
    writes more than a pipe holds would otherwise stop) and its end kept for the error
    message; closed without error when the command already ended (paramiko signals the pid
    regardless, which fails once the tunnel has exited), and reaped."""

    def __init__(self, command_line: str) -> None:
        super().__init__(command_line)
        self._said = b""
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        if stream is None:
            return
        for chunk in iter(lambda: stream.read(4096), b""):
            self._said = (self._said + chunk)[-PROXY_MESSAGE_LIMIT:]

    def ended_saying(self) -> str:
        """What the tunnel wrote last, in one line, once it has ended ("" while it runs)."""
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        self._drain.join(timeout=2)
        text = self._said.decode(errors="replace")
        words = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        return f"; the tunnel ended (exit {self.process.returncode}): {words}" if words else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _open_socket(node: Node, timeout: float) -> socket.socket | paramiko.ProxyCommand:
    """A TCP connection to the node's sshd, or its proxy command's pipes (an IAP tunnel)."""
    if node.proxy:
        try:
            proxy = _Tunnel(shlex.join(node.proxy))
        except OSError as exc:  # the program is not there (FileNotFoundError) or not runnable
            program = node.proxy[0]
            tool = " (the Google Cloud CLI)" if program == "gcloud" else ""
            raise RemoteError(
                f"{node.name}: cannot start the tunnel `{program}`: {exc}; the node is reached "
                f"through `{shlex.join(node.proxy[:3])}`: install {program}{tool} and put it "
                "on PATH",
            ) from exc
        return proxy
    try:
        sock = socket.create_connection((node.ip, node.port), timeout=timeout)
    except OSError as exc:
        raise RemoteError(f"{node.name} ({node.ip}:{node.port}): cannot connect: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _proxy_said(sock: object) -> str:
    """Why a tunnel could not carry the connection, as it said it ("" for a plain socket)."""
    return sock.ended_saying() if isinstance(sock, _Tunnel) else ""


def fetch_host_key(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> str:
    """The host key a server presents ("type base64"), for pinning machines that already exist."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise RemoteError(f"{host}:{port}: cannot connect: {exc}") from exc
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    options.kex = _prefer(options.kex, FAST_KEX)
    options.key_types = _prefer(options.key_types, ("ssh-ed25519",))
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"{host}:{port}: SSH failed: {exc}") from exc
    finally:
        transport.close()


def read_bounded(recv: Callable[[int], bytes], limit: int) -> bytes | None:
    """What `recv` gives until its end, or None as soon as that is more than `limit` bytes."""
    data = bytearray()
    while chunk := recv(_CHUNK):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


class StderrReader:
    """Reads a channel's stderr to its end in a thread of its own, keeping the first
    MAX_ERRORS bytes: unread, stderr would fill the channel's window and stall stdout."""

    def __init__(self, channel: paramiko.Channel, keep: int = MAX_ERRORS) -> None:
        self._channel, self._keep = channel, keep
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            while chunk := self._channel.recv_stderr(_CHUNK):
                room = self._keep - len(self._data)
                if room > 0:
                    self._data += chunk[:room]

    def text(self, wait: float | None = CONNECT_TIMEOUT) -> str:
        """What was kept, once stderr ended (or `wait` seconds passed)."""
        self._thread.join(wait)
        return bytes(self._data).decode(errors="replace")


def _prefer(available: Sequence[str], wanted: tuple[str, ...]) -> tuple[str, ...]:
    first = tuple(name for name in wanted if name in available)
    return first + tuple(name for name in available if name not in first)


def _verify_host_key(node: Node, presented: paramiko.PKey) -> None:
    pinned_type, pinned_blob = node.host_key.split()[:2]
    if presented.get_name() == pinned_type and presented.get_base64() == pinned_blob:
        return
    got = f"{presented.get_name()} {presented.get_base64()}"
    raise HostKeyMismatch(
        f"{node.name} ({node.ip}): HOST KEY CHANGED: pinned {fingerprint(node.host_key)}, "
        f"presented {fingerprint(got)}",
        hint="the node may have been replaced or someone may be intercepting; "
        "if the node was recreated on purpose, run `dlvm up` to re-pin it",
    )
