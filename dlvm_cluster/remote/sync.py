"""Delta file sync over the cluster's SSH connections.

Push: list what the node has (one `find`), compare with the local tree by size, mtime and
mode (rsync's quick check), and stream only the differences as one tar per node, read from
disk in chunks. Deletions happen only when asked. Pull: one tar per node, streamed back into a
local subfolder per node.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.remote.connection import Connection, StderrReader, paramiko
from dlvm_cluster.remote.extract import extract_stream, open_pull_folder
from dlvm_cluster.remote.pool import SshPool, for_each_node
from dlvm_cluster.remote.results import SyncResult
from dlvm_cluster.shell import quote_path

CHUNK = 1 << 20
CANCEL_WAIT = 10.0  # seconds a cancelled push waits for the remote tar to exit
PULL_TAR = "tar -c --hard-dereference -f - ."
MAX_LISTING = 1 << 30
"""The most a node's listing of a push destination may take (1 GiB: some ten million files);
one that never ends would otherwise fill this machine's memory."""


class SyncCancelled(Exception):
    """The push was stopped from outside (Ctrl-C of the client an agent serves)."""


@dataclass(frozen=True)
class PushWatch:
    """How a push reports and is stopped, from its worker threads: `planned` once per node
    with the bytes it is about to send, `sent` as they go, `cancelled` polled between chunks
    (True: the channel is closed, so the remote tar stops with a truncated archive)."""

    planned: Callable[[int], None] = lambda size: None
    sent: Callable[[int], None] = lambda size: None
    cancelled: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class Entry:
    """One path of a tree: a file (f), directory (d) or symlink (l)."""

    path: str  # relative, '/'-separated
    kind: str
    size: int = 0
    mtime: int = 0  # whole seconds, as tar keeps them everywhere
    mode: int = 0
    target: str = ""


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """A pattern matches the whole relative path or any one of its components."""
    parts = relative.split("/")
    return any(
        fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, pattern) for p in parts)
        for pattern in patterns
    )


def scan_local(source: Path, exclude: Sequence[str]) -> list[Entry]:
    """The tree under `source` (or the single file `source`), excludes applied."""
    if source.is_file():
        return [_entry(source, source.name)]
    entries = []
    # A stack, not os.walk: Python 3.11's recurses, and a tree pulled from a node may be
    # thousands of folders deep.
    pending = [(source, "")]
    while pending:
        base, prefix = pending.pop()
        dirs, files = _children(base)
        below = []
        for name in sorted(dirs):
            relative = prefix + name
            if excluded(relative, exclude):
                continue
            entry = _entry(base / name, relative)
            entries.append(entry)
            if entry.kind == "d":
                below.append((base / name, relative + "/"))
        for name in sorted(files):
            relative = prefix + name
            if not excluded(relative, exclude):
                entries.append(_entry(base / name, relative))
        pending.extend(reversed(below))
    return entries


def _children(folder: Path) -> tuple[list[str], list[str]]:
    """The folder's sub-folders (symlinks not followed) and its other entries, as os.walk
    splits them; an unreadable folder has none."""
    dirs: list[str] = []
    files: list[str] = []
    try:
        with os.scandir(folder) as found:
            for item in found:
                is_dir = False
                with contextlib.suppress(OSError):
                    is_dir = item.is_dir(follow_symlinks=False)
                (dirs if is_dir else files).append(item.name)
    except OSError:
        pass
    return dirs, files


def _entry(path: Path, relative: str) -> Entry:
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return Entry(relative, "l", target=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return Entry(relative, "d", mode=mode)
    return Entry(relative, "f", size=info.st_size, mtime=int(info.st_mtime), mode=mode)


# One record per path, six NUL-terminated fields: a name may hold tabs and newlines, never a
# NUL. The listing ends with an empty name, which find never prints (-mindepth 1).
LISTING = "find . -mindepth 1 -printf '%P\\0%y\\0%s\\0%T@\\0%m\\0%l\\0' && printf '\\000'"
LISTING_FIELDS = 6


def listing_end(data: bytes | bytearray, start: int = 0) -> tuple[int | None, int]:
    """Where the listing in `data` ends (None until its end has come), and where the records
    read so far end: scanning goes on from there, `start`, as more data comes."""
    position = start
    while position < len(data):
        if data[position] == 0:  # an empty name: the end
            return position, position
        end = position
        for _ in range(LISTING_FIELDS):
            found = data.find(b"\0", end)
            if found < 0:
                return None, position
            end = found + 1
        position = end
    return None, position


def parse_listing(data: bytes) -> dict[str, Entry]:
    """The records of a listing; one whose numbers do not parse is left out (as if absent:
    its file is sent again, never deleted)."""
    fields = data.split(b"\0")
    entries = {}
    for at in range(0, len(fields) - LISTING_FIELDS + 1, LISTING_FIELDS):
        raw_path, kind, size, mtime, mode, target = fields[at : at + LISTING_FIELDS]
        path = os.fsdecode(raw_path)
        try:
            entries[path] = Entry(
                path,
                kind.decode() if kind in (b"f", b"d", b"l") else "?",
                size=int(size),
                mtime=int(float(mtime)),
                mode=int(mode, 8),
                target=os.fsdecode(target),
            )
        except ValueError:
            continue
    return entries


def delta(
    local: Iterable[Entry], remote: dict[str, Entry], *, delete: bool, exclude: Sequence[str]
) -> tuple[list[Entry], list[str]]:
    """What to send (new or changed) and what to delete (only with `delete`)."""
    send = []
    wanted = set()
    for entry in local:
        wanted.add(entry.path)
        if _changed(entry, remote.get(entry.path)):
            send.append(entry)
    doomed: list[str] = []
    if delete:
        for path in sorted(remote):
            parent_doomed = any(path.startswith(d + "/") for d in doomed)
            if path not in wanted and not parent_doomed and not excluded(path, exclude):
                doomed.append(path)
    return send, doomed


def _changed(entry: Entry, have: Entry | None) -> bool:
    if have is None or have.kind != entry.kind:
        return True
    if entry.kind == "f":
        return (have.size, have.mtime, have.mode) != (entry.size, entry.mtime, entry.mode)
    if entry.kind == "l":
        return have.target != entry.target
    return have.mode != entry.mode


class _ChannelWriter(io.RawIOBase):
    """A file-like view of a channel's stdin, so tarfile can stream straight into it."""

    def __init__(self, channel: paramiko.Channel, watch: PushWatch) -> None:
        self.channel = channel
        self.watch = watch

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.watch.cancelled():
            raise SyncCancelled
        self.channel.sendall(data)
        self.watch.sent(len(data))
        return len(data)


def push_to_node(
    connection: Connection,
    source: Path,
    destination: str,
    entries: Sequence[Entry],
    *,
    delete: bool,
    exclude: Sequence[str],
    watch: PushWatch = PushWatch(),
) -> SyncResult:
    """One remote command per node: it lists the destination, then extracts the tar that
    follows on its stdin (an empty one when nothing changed). Starting a remote shell is a
    large part of a small sync (sshd forks it, and it reads the user's ~/.bashrc), so the
    listing and the extraction share one."""
    result = SyncResult(connection.node.name)
    started = time.monotonic()
    dst = quote_path(destination)
    channel = connection.channel()
    try:
        channel.exec_command(
            f"mkdir -p {dst} && cd {dst} && {LISTING} && exec tar -x --no-same-owner -f -"
        )
        errors = StderrReader(channel)
        listing = _read_listing(channel, connection.node.name)
        if listing is None:
            err = errors.text()
            raise RemoteError(f"{connection.node.name}: cannot list {destination}: {err.strip()}")
        remote = parse_listing(listing)
        send, doomed = delta(entries, remote, delete=delete, exclude=exclude)
        result.unchanged = len(entries) - len(send)
        watch.planned(sum(entry.size for entry in send if entry.kind == "f"))
        if doomed:  # on a second channel, while tar waits for its input
            code, _, err = connection.run(
                f"cd {dst} && xargs -0 rm -rf --", b"".join(os.fsencode(p) + b"\0" for p in doomed)
            )
            if code != 0:
                raise RemoteError(f"{connection.node.name}: cannot delete in {destination}: {err}")
            result.deleted = len(doomed)
        base = source if source.is_dir() else source.parent
        writer = io.BufferedWriter(_ChannelWriter(channel, watch), buffer_size=CHUNK)  # type: ignore[type-var]
        try:
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in send:
                    tar.add(base / entry.path, arcname=entry.path, recursive=False)
                    if entry.kind == "f":
                        result.sent_bytes += entry.size
                        result.sent_files += 1
                        result.sent.append(entry.path)
            writer.flush()
        except SyncCancelled:
            _end_remote_tar(channel)
            raise
        channel.shutdown_write()
        err_text = errors.text(wait=None)
        if channel.recv_exit_status() != 0:
            raise RemoteError(f"{connection.node.name}: tar failed: {err_text.strip()}")
    finally:
        channel.close()
    result.seconds = time.monotonic() - started
    return result


def _end_remote_tar(channel: paramiko.Channel) -> None:
    """A cancelled push ends the remote tar before it is reported: its input ends, so it
    stops at the truncated archive, and its exit is awaited (briefly), so that nothing of the
    push runs on the node once the user's command has returned."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.shutdown_write()
        channel.status_event.wait(CANCEL_WAIT)


def _read_listing(channel: paramiko.Channel, node: str, limit: int = MAX_LISTING) -> bytes | None:
    """The remote command's stdout up to the listing's end; None if it ended before that."""
    data = bytearray()
    scanned = 0
    while True:
        chunk = channel.recv(CHUNK)
        if not chunk:
            return None
        data += chunk
        end, scanned = listing_end(data, scanned)
        if end is not None:
            return bytes(data[:end])
        if len(data) > limit:
            raise RemoteError(
                f"{node}: its listing of the destination passed {limit} bytes without ending",
                hint="the node is misbehaving, or the destination holds millions of files: "
                "sync a smaller folder",
            )


def push(
    pool: SshPool,
    nodes: Sequence[Node],
    source: Path,
    destination: str,
    *,
    exclude: Sequence[str] = (),
    delete: bool = False,
    watch: PushWatch = PushWatch(),
) -> list[SyncResult]:
    entries = scan_local(source, exclude)
    return for_each_node(
        pool,
        nodes,
        lambda connection: push_to_node(
            connection, source, destination, entries, delete=delete, exclude=exclude, watch=watch
        ),
        _failed,
    )


def pull(pool: SshPool, nodes: Sequence[Node], remote: str, local: Path) -> list[SyncResult]:
    """Copy `remote` from every node into local/<node name>/. What a node sends is unpacked by
    remote/extract.py, which writes nothing outside that folder; hard links are sent as files
    (`--hard-dereference`), so that a pull never needs one."""

    def one(connection: Connection) -> SyncResult:
        result = SyncResult(connection.node.name)
        started = time.monotonic()
        target = open_pull_folder(local, connection.node.name)
        channel = connection.channel()
        try:
            channel.exec_command(f"cd {quote_path(remote)} && {PULL_TAR}")
            errors = StderrReader(channel)
            try:
                extracted = extract_stream(channel.makefile("rb"), target)
            except RemoteError as exc:
                raise RemoteError(
                    f"{connection.node.name}: {exc.message} (pulling {remote})", hint=exc.hint
                ) from exc
            result.sent_files, result.sent_bytes = extracted.files, extracted.bytes
            if channel.recv_exit_status() != 0:
                err = errors.text()
                raise RemoteError(f"{connection.node.name}: cannot read {remote}: {err.strip()}")
        except tarfile.TarError as exc:
            channel.close()
            err = errors.text().strip()
            raise RemoteError(
                f"{connection.node.name}: cannot read {remote}: {err or exc}"
            ) from exc
        finally:
            channel.close()
            os.close(target)
        result.seconds = time.monotonic() - started
        return result

    return for_each_node(pool, nodes, one, _failed)


def _failed(node: Node, error: str) -> SyncResult:
    return SyncResult(node.name, error=error)
