"""Unpack a tar stream that a node sent, trusting nothing in it.

`dlvm sync --down` writes what a node sends onto the user's machine, often as root, so a
compromised node must not be able to write anywhere else. tarfile's own extraction (even with
`filter="data"`) resolves paths with `os.path.realpath`, which gives up on paths longer than
PATH_MAX and so can be led outside the folder by a chain of symlinks, and 3.11 releases before
3.11.4 have no filter at all. Here only tarfile's parser is used; the writing is ours:

- regular files, directories and symlinks only: hardlinks, devices and fifos are refused;
- a name is relative, has no `..`, and every folder on its way is opened with O_NOFOLLOW
  from the folder before it (through directory file descriptors), so no symlink is followed,
  whether it came in this archive or was left by an earlier pull;
- a file is created with O_CREAT|O_EXCL|O_NOFOLLOW (one that is already there is unlinked
  first), its mode without setuid, setgid, sticky or group/other write bits; folders get the
  local default mode, and nothing gets the node's owner;
- a symlink is kept only when its target stays inside the folder whatever the other links
  are: relative, some `..` first and then only plain names, and no more `..` than the link
  is deep (rsync's --safe-links, made strict enough to hold when links point through links);
- a file's size and the total are bounded, and so is every header tarfile would read whole
  into memory (a PAX or GNU long-name header announcing gigabytes);
- the pull folder itself (LOCAL/node-N) is opened without following a symlink, and must be
  this user's and not writable by others (another local user could plant it in a shared
  LOCAL).

Anything refused stops the extraction with an error naming the member.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from dlvm_cluster.errors import RemoteError

MAX_FILE_BYTES = 1 << 40
"""The largest file a pull writes (1 TiB): far above any checkpoint shard, far below what
would fill a disk by surprise."""

MAX_TOTAL_BYTES = 8 << 40
"""The most a pull writes from one node (8 TiB): a whole training run's checkpoints fit."""

MAX_MEMBERS = 10_000_000
"""The most entries a pull makes from one node: a folder of empty files or links costs no
bytes but an inode each."""

MAX_HEADER_BYTES = 1 << 20
"""The largest extended header (PAX, GNU long name or link) read: tarfile reads one whole
into memory, several times over; a real one holds a path and a few attributes."""

CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
HINT = "the node sent an archive that would write outside the pull folder or is unsafe to keep"
LOCAL_HINT = (
    "writing on this machine failed: check the free space and the pull folder's permissions, "
    "then pull again"
)


class TarSource(Protocol):
    """What tarfile takes as a file: an SSH channel's stdout, a BytesIO in tests. In stream
    mode ("r|") it only reads."""

    def read(self, size: int, /) -> bytes: ...
    def write(self, data: bytes, /) -> object: ...
    def tell(self) -> int: ...
    def seek(self, position: int, /) -> object: ...
    def close(self) -> object: ...


@dataclass(frozen=True)
class Limits:
    """Size bounds of one extraction (tests pass small ones)."""

    file_bytes: int = MAX_FILE_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    members: int = MAX_MEMBERS


@dataclass
class Extracted:
    """What an extraction wrote: regular files and their bytes."""

    files: int = 0
    bytes: int = 0
    members: int = 0


class RefusedMember(RemoteError):
    """A member of the archive that is not written (or could not be)."""

    def __init__(self, member: str, reason: str, *, hint: str = HINT) -> None:
        shown = (
            repr(member)
            if len(member) <= 300
            else f"{member[:200]!r}... ({len(member)} characters)"
        )
        super().__init__(f"refused {shown}: {reason}", hint=hint)
        self.member = member
        self.reason = reason


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header, refusing an extended header too large before reading it."""

    def _proc_pax(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header_size("PAX")
        header: tarfile.TarInfo = super()._proc_pax(archive)  # type: ignore[misc]
        return header

    def _proc_gnulong(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header_size("GNU long name")
        header: tarfile.TarInfo = super()._proc_gnulong(archive)  # type: ignore[misc]
        return header

    def _check_header_size(self, kind: str) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise RefusedMember(
                self.name, f"a {kind} header of {self.size} bytes (at most {MAX_HEADER_BYTES})"
            )


def open_pull_folder(local: str | os.PathLike[str], name: str) -> int:
    """A descriptor of the folder LOCAL/NAME, made if missing, opened without following a
    symlink at either level; refused unless owned by this user (or root) and not writable by
    others. The caller closes it."""
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(local, 0o700)
    parent = _open_owned(lambda: os.open(local, _DIR_FLAGS), os.fspath(local))
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        return _open_owned(
            lambda: os.open(name, _DIR_FLAGS, dir_fd=parent), os.path.join(local, name)
        )
    finally:
        os.close(parent)


def _open_owned(opener: Callable[[], int], shown: str) -> int:
    hint = f"pull into a folder of your own, or remove {shown} if it is yours"
    try:
        fd = opener()
    except OSError as exc:
        why = "a symlink" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
        raise RemoteError(f"cannot pull into {shown}: {why}", hint=hint) from exc
    info = os.fstat(fd)
    problem = ""
    if info.st_uid not in (os.geteuid(), 0):
        problem = f"it belongs to another user (uid {info.st_uid})"
    elif info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        problem = "anyone may write in it"
    if problem:
        os.close(fd)
        raise RemoteError(f"cannot pull into {shown}: {problem}", hint=hint)
    return fd


def extract_stream(
    stream: TarSource, destination: str | os.PathLike[str] | int, *, limits: Limits = Limits()
) -> Extracted:
    """Unpack the tar read from `stream` into the existing folder `destination` (a path, or
    a descriptor of it, which stays open)."""
    done = Extracted()
    if isinstance(destination, int):
        root = os.dup(destination)
    else:
        root = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as tar:
            while (member := tar.next()) is not None:
                # tarfile keeps every header it read: with millions of members that is memory
                # a pull never needs back.
                getattr(tar, "members", []).clear()
                done.members += 1
                if done.members > limits.members:
                    raise RefusedMember(
                        member.name, f"more than the {limits.members} entries a pull may make"
                    )
                try:
                    _extract_member(tar, member, root, limits, done)
                except OSError as exc:  # this machine's side: the disk, the folder
                    if exc.errno == errno.ENAMETOOLONG:  # the node's side: its name
                        raise RefusedMember(member.name, "a name too long to write") from exc
                    reason = f"cannot write it: {exc.strerror or exc}"
                    raise RefusedMember(member.name, reason, hint=LOCAL_HINT) from exc
                except (ValueError, OverflowError) as exc:  # a number no file system takes
                    raise RefusedMember(member.name, f"a bad header: {exc}") from exc
    except (ValueError, OverflowError) as exc:  # tarfile's parser lets a few of these through
        raise RemoteError(f"an unreadable tar header: {exc}", hint=HINT) from exc
    finally:
        os.close(root)
    return done


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: int, limits: Limits, done: Extracted
) -> None:
    parts = member_parts(member.name)
    if not parts:
        if member.isdir():
            return  # the folder itself ("./"): it is there already
        raise RefusedMember(member.name, "an empty name")
    if member.isreg() and member.sparse is None:
        _check_size(member, limits, done)
    elif member.issym():
        check_link_target(member.name, parts, member.linkname)
    elif not member.isdir():
        raise RefusedMember(member.name, f"a {_kind(member)}: only files, folders and symlinks")
    with _open_parent(root, parts[:-1], member.name) as parent:
        name = parts[-1]
        if member.isdir():
            _make_dir(parent, name)
        elif member.issym():
            _replace(parent, name, member.name)
            os.symlink(member.linkname, name, dir_fd=parent)
        else:
            _write_file(tar, member, parent, name, done)


def member_parts(name: str) -> list[str]:
    """The folders and name a member is written at, or RefusedMember: relative, no `..`, no
    NUL. `.` and empty parts (`./a`, `a//b`) mean nothing and are dropped."""
    if name.startswith("/"):
        raise RefusedMember(name, "an absolute name")
    if "\0" in name:
        raise RefusedMember(name, "a NUL in the name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RefusedMember(name, "a '..' in the name")
    return parts


def check_link_target(name: str, parts: list[str], target: str) -> None:
    """Refuse a symlink whose target could lead outside the folder: absolute, or not of the
    form `../`*k followed by plain names with k at most the link's depth. A `..` after a name
    is refused as well, since that name may itself be a link (`s/..` is not where it looks)."""
    if not target:
        raise RefusedMember(name, "a symlink with an empty target")
    if "\0" in target:
        raise RefusedMember(name, "a NUL in the symlink's target")
    if target.startswith("/"):
        raise RefusedMember(name, f"a symlink to the absolute path {target!r}")
    steps = [step for step in target.split("/") if step not in ("", ".")]
    ups = 0
    while ups < len(steps) and steps[ups] == "..":
        ups += 1
    if ".." in steps[ups:]:
        raise RefusedMember(name, f"a symlink to {target!r}: '..' after a name")
    if ups > len(parts) - 1:
        raise RefusedMember(name, f"a symlink to {target!r}, outside the folder")


def _check_size(member: tarfile.TarInfo, limits: Limits, done: Extracted) -> None:
    """tarfile reads exactly the size the header gives: that is the size checked."""
    if member.size < 0:
        raise RefusedMember(member.name, f"a negative size ({member.size})")
    if member.size > limits.file_bytes:
        raise RefusedMember(
            member.name,
            f"{member.size} bytes, more than the {limits.file_bytes} a pulled file may have",
        )
    if done.bytes + member.size > limits.total_bytes:
        raise RefusedMember(
            member.name, f"the pull would exceed {limits.total_bytes} bytes from one node"
        )


@contextlib.contextmanager
def _open_parent(root: int, folders: list[str], member: str) -> Iterator[int]:
    """The folder a member goes into, opened one part at a time with O_NOFOLLOW from the one
    before; missing folders are made (tar lists a folder before its content, but need not)."""
    fd = os.dup(root)
    try:
        for folder in folders:
            try:
                child = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(folder, 0o777, dir_fd=fd)
                child = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):  # a symlink; a file
                    raise
                raise RefusedMember(
                    member, f"{folder!r} on its way is a symlink or a file, not a folder"
                ) from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _make_dir(parent: int, name: str) -> None:
    """A folder, where an earlier pull may have left a file or a symlink of that name."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)
        return
    if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        return
    os.unlink(name, dir_fd=parent)
    os.mkdir(name, 0o777, dir_fd=parent)


def _replace(parent: int, name: str, member: str) -> None:
    """Make room for a file or symlink: unlink what an earlier pull left there (the entry
    itself, never what a symlink points to); a folder is not removed."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise RefusedMember(
            member,
            "a folder of that name is already in the pull folder",
            hint="an earlier pull left a folder where the node now has a file or a link: move it",
        )
    os.unlink(name, dir_fd=parent)


def _write_file(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    parent: int,
    name: str,
    done: Extracted,
) -> None:
    _replace(parent, name, member.name)
    data = tar.extractfile(member)
    if data is None:
        raise RefusedMember(member.name, "no content")
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
    with os.fdopen(fd, "wb") as out:
        while chunk := data.read(CHUNK):
            out.write(chunk)
        out.flush()  # before the times are set: a later write would change them
        os.fchmod(fd, safe_file_mode(member.mode))
        os.utime(fd, (member.mtime, member.mtime))
    done.files += 1
    done.bytes += member.size


def safe_file_mode(mode: int) -> int:
    """The node's mode without setuid, setgid, sticky and group/other write bits; the owner
    can always read and write it (as tarfile's data filter did)."""
    return (mode & 0o755) | 0o600


def _kind(member: tarfile.TarInfo) -> str:
    if member.islnk():
        return f"hardlink to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    if member.sparse is not None:
        return "sparse file"
    return f"member of type {member.type!r}"
