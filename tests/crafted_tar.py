"""Tar archives built in memory, as a hostile node would send them (tests of `sync --down`)."""

from __future__ import annotations

import io
import os
import tarfile

Member = tuple[tarfile.TarInfo, bytes]


def file(name: str, data: bytes = b"data", mode: int = 0o644, mtime: int = 1_700_000_000) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, mtime
    return info, data


def folder(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def archive(*members: Member) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


def path_max_chain(outside: str) -> list[Member]:
    """CVE-2025-4517: folders with 247-character names 16 deep, reached through 16 one-letter
    symlinks, so that their real path is just short of PATH_MAX; a symlink in the deepest one,
    whose real path is past PATH_MAX, points 16 folders up (to the pull folder).
    os.path.realpath cannot lstat it, takes it for a plain name, and so believes that
    `escape`, which goes through it and one `..` further, stays inside: it is `outside`."""
    component = "d" * 247
    steps = "abcdefghijklmnop"
    members, path = [], ""
    for step in steps:
        members.append(folder(os.path.join(path, component)))
        members.append(link(os.path.join(path, step), component))
        path = os.path.join(path, component)
    long_link = os.path.join(*steps, "l" * 254)
    members.append(link(long_link, "../" * len(steps)))
    members.append(link("escape", f"{long_link}/../{outside}"))
    members.append(file("escape/planted", b"written outside"))
    return members
