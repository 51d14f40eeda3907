"""The extraction of a node's tar stream (remote/extract.py), fed crafted archives built in
memory: nothing may be written outside the pull folder, whatever the archive holds."""

from __future__ import annotations

import io
import os
import resource
import signal
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from crafted_tar import archive, file, folder, link, path_max_chain, special

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.remote.extract import HINT, Limits, RefusedMember, extract_stream


@pytest.fixture
def pull(tmp_path: Path) -> Path:
    """The pull folder, next to a folder `outside` holding a file `secret`."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("original")
    (tmp_path / "pull").mkdir()
    return tmp_path / "pull"


def outside_tree(pull: Path) -> dict[str, str]:
    """Everything next to the pull folder (links not followed), with file contents."""
    found = {}
    for root, dirs, files in os.walk(pull.parent):
        if Path(root) == pull.parent:
            dirs.remove(pull.name)
        for name in dirs + files:
            path = Path(root) / name
            found[str(path.relative_to(pull.parent))] = (
                path.read_text() if path.is_file() and not path.is_symlink() else ""
            )
    return found


def refused(pull: Path, stream: io.BytesIO, member: str, limits: Limits = Limits()) -> str:
    """Extract, expect `member` to be refused and nothing outside the pull folder touched."""
    before = outside_tree(pull)
    with pytest.raises(RefusedMember) as caught:
        extract_stream(stream, pull, limits=limits)
    assert caught.value.member == member
    assert repr(member) in str(caught.value)
    assert outside_tree(pull) == before
    return caught.value.reason


def test_a_good_archive_round_trips(pull: Path) -> None:
    done = extract_stream(
        archive(
            folder("."),
            folder("./blobs"),
            file("./blobs/abc", b"weights", mode=0o640),
            folder("./snap"),
            folder("./snap/v1", mode=0o700),
            link("./snap/v1/model.bin", "../../blobs/abc"),
            link("./latest", "snap/v1"),
            link("./here", "."),
            file("./snap/v1/run.sh", b"#!/bin/sh\n", mode=0o755),
            file("./deep/er/file", b"parents made on the way"),
        ),
        pull,
    )
    assert (done.files, done.bytes) == (3, 7 + 10 + 23)
    assert (pull / "snap" / "v1" / "model.bin").read_bytes() == b"weights"
    assert os.readlink(pull / "snap" / "v1" / "model.bin") == "../../blobs/abc"
    assert (pull / "latest" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(pull / "here") == "."
    assert (pull / "deep" / "er" / "file").read_bytes() == b"parents made on the way"
    assert stat.S_IMODE((pull / "blobs" / "abc").stat().st_mode) == 0o640
    assert stat.S_IMODE((pull / "snap" / "v1" / "run.sh").stat().st_mode) == 0o755
    assert (pull / "blobs" / "abc").stat().st_mtime == 1_700_000_000


def test_a_second_pull_replaces_files_and_links_in_place(pull: Path) -> None:
    first = archive(file("f", b"one", mode=0o444), link("l", "f"), link("d", "f"))
    extract_stream(first, pull)
    second = archive(file("f", b"two"), file("l", b"now a file"), folder("d"), file("d/x"))
    extract_stream(second, pull)
    assert (pull / "f").read_bytes() == b"two"
    assert not (pull / "l").is_symlink() and (pull / "l").read_bytes() == b"now a file"
    assert (pull / "d" / "x").read_bytes() == b"data"


def test_the_path_max_symlink_chain_is_refused(pull: Path) -> None:
    chain = path_max_chain("outside")
    long_link = chain[-3][0].name
    assert "on its way is a symlink" in refused(pull, archive(*chain), long_link)
    assert not (pull.parent / "outside" / "planted").exists()


def test_the_escape_link_of_the_chain_is_refused_by_itself(pull: Path) -> None:
    chain = path_max_chain("outside")
    reason = refused(pull, archive(*chain[:-3], *chain[-2:]), "escape")
    assert "'..' after a name" in reason


@pytest.mark.parametrize(
    "name", ["../escape", "a/../../escape", "./../escape", "a/b/../../../escape", "..", "a/.."]
)
def test_dot_dot_in_a_name_is_refused(pull: Path, name: str) -> None:
    assert "'..'" in refused(pull, archive(file(name, b"written outside")), name)
    assert not (pull.parent / "escape").exists()


def test_an_absolute_name_is_refused(pull: Path) -> None:
    name = str(pull.parent / "outside" / "secret")
    assert "absolute" in refused(pull, archive(file(name, b"overwritten")), name)


@pytest.mark.parametrize("name", ["", ".", "./", "./."])
def test_a_file_without_a_name_is_refused(pull: Path, name: str) -> None:
    refused(pull, archive(file(name)), file(name)[0].name)


@pytest.mark.parametrize(
    ("target", "through"),
    [
        ("sub", "l/x"),  # a link that stays inside: still never followed
        (".", "l/x"),
        ("sub", "l/deeper/x"),
    ],
)
def test_a_file_through_a_symlink_is_refused(pull: Path, target: str, through: str) -> None:
    stream = archive(folder("sub"), link("l", target), file(through, b"through the link"))
    assert "'l' on its way is a symlink" in refused(pull, stream, through)
    assert os.listdir(pull / "sub") == []


def test_a_file_through_a_symlink_left_by_an_earlier_pull_is_refused(pull: Path) -> None:
    (pull / "d").symlink_to(pull.parent / "outside")
    (pull / "f").symlink_to(pull.parent / "outside" / "secret")
    refused(pull, archive(file("d/secret", b"overwritten")), "d/secret")
    extract_stream(archive(file("f", b"new content")), pull)
    assert not (pull / "f").is_symlink() and (pull / "f").read_bytes() == b"new content"
    assert (pull.parent / "outside" / "secret").read_text() == "original"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("l", "../outside"),
        ("d/l", "../../outside/secret"),
        ("l", "/etc"),
        ("l", ".."),
        # Lexically inside, but `s` (kept: inside) points less deep than it sits, so the
        # `..` after it climbs out: a `..` after a name is refused.
        ("l", "d/e/s/../../../outside"),
        ("l", ""),
    ],
)
def test_a_symlink_that_may_lead_outside_is_refused(pull: Path, name: str, target: str) -> None:
    stream = archive(folder("d"), folder("d/e"), link("d/e/s", "../../x"), link(name, target))
    refused(pull, stream, name)
    assert not (pull / name).is_symlink()


@pytest.mark.parametrize("target", ["inside", "../outside/secret", "/etc/passwd"])
def test_a_hardlink_is_refused(pull: Path, target: str) -> None:
    local_file = str(pull.parent / "outside" / "secret") if target == "inside" else target
    stream = archive(file("inside"), link("h", local_file, tarfile.LNKTYPE), file("h", b"x"))
    assert "hardlink" in refused(pull, stream, "h")
    assert not (pull / "h").exists()


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "fifo")],
)
def test_devices_and_fifos_are_refused(pull: Path, kind: bytes, word: str) -> None:
    assert word in refused(pull, archive(special("node", kind)), "node")
    assert not os.path.lexists(pull / "node")


def test_a_file_over_the_size_bound_is_refused(pull: Path) -> None:
    limits = Limits(file_bytes=10, total_bytes=100)
    stream = archive(file("small", b"0123456789"), file("big", b"0123456789!"))
    assert "11 bytes, more than the 10" in refused(pull, stream, "big", limits)
    assert not (pull / "big").exists()


def test_the_total_size_is_bounded(pull: Path) -> None:
    limits = Limits(file_bytes=10, total_bytes=15)
    stream = archive(file("one", b"01234567"), file("two", b"01234567"))
    assert "exceed 15 bytes" in refused(pull, stream, "two", limits)
    assert not (pull / "two").exists()


def test_the_number_of_entries_is_bounded(pull: Path) -> None:
    """Empty files cost no bytes but an inode each."""
    limits = Limits(members=3)
    stream = archive(*(file(f"empty-{n}", b"") for n in range(5)))
    assert "more than the 3 entries" in refused(pull, stream, "empty-3", limits)
    assert sorted(path.name for path in pull.iterdir()) == ["empty-0", "empty-1", "empty-2"]


def test_a_local_write_failure_is_not_blamed_on_the_node(pull: Path) -> None:
    """A full disk is this machine's problem: the hint says so (staged with a file size limit,
    which holds for root too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4, hard))
    try:
        with pytest.raises(RefusedMember) as caught:
            extract_stream(archive(file("big", b"0123456789")), pull)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert caught.value.member == "big"
    assert "cannot write it" in caught.value.reason
    assert "writing on this machine failed" in caught.value.hint


def test_setuid_setgid_sticky_and_group_write_bits_are_dropped(pull: Path) -> None:
    extract_stream(
        archive(folder("d", mode=0o1777), file("d/f", b"x", mode=0o7777), file("g", mode=0o4000)),
        pull,
    )
    assert stat.S_IMODE((pull / "d" / "f").stat().st_mode) == 0o755
    assert stat.S_IMODE((pull / "g").stat().st_mode) == 0o600
    assert not (pull / "d").stat().st_mode & (stat.S_ISVTX | stat.S_ISUID | stat.S_ISGID)


def test_a_header_no_file_system_takes_is_refused(pull: Path) -> None:
    info, data = file("f")
    info.pax_headers = {"mtime": "1e400"}  # infinity
    assert "bad header" in refused(pull, archive((info, data)), "f")


def test_a_sparse_file_is_refused(pull: Path) -> None:
    info, data = file("s", b"x")
    info.pax_headers = {"GNU.sparse.map": "0,1", "GNU.sparse.size": "1"}
    assert "sparse file" in refused(pull, archive((info, data)), "s")


@pytest.mark.parametrize(
    "headers",
    [
        {"GNU.sparse.map": "x,y", "GNU.sparse.size": "10"},
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "zz"},
    ],
)
def test_a_header_the_tar_parser_chokes_on_is_an_error_not_a_crash(
    pull: Path, headers: dict[str, str]
) -> None:
    info, data = file("s")
    info.pax_headers = headers
    with pytest.raises(RemoteError, match="unreadable tar header"):
        extract_stream(archive((info, data)), pull)


# -- headers read whole, and the pull folder itself ----------------------------------------


class _Endless(io.RawIOBase):
    """A stream of `head`, then zeros without end; counts what was read."""

    def __init__(self, head: bytes) -> None:
        self.head, self.read_bytes = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        start = self.read_bytes
        chunk = self.head[start : start + len(buffer)]
        chunk += bytes(len(buffer) - len(chunk))
        buffer[: len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


@pytest.mark.parametrize(("kind", "named"), [(tarfile.XHDTYPE, "PAX"), (b"L", "GNU long name")])
def test_a_huge_extended_header_is_refused_before_it_is_read(
    pull: Path, kind: bytes, named: str
) -> None:
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = kind, 400 << 20  # announces 400 MB
    stream = _Endless(header.tobuf(format=tarfile.GNU_FORMAT))
    with pytest.raises(RefusedMember) as caught:
        extract_stream(stream, pull)  # type: ignore[arg-type]
    assert f"a {named} header of {400 << 20} bytes" in str(caught.value)
    assert stream.read_bytes < 2 << 20  # refused before its payload was read
    assert not any(pull.iterdir())


def test_the_pull_folder_planted_as_a_symlink_is_refused(tmp_path: Path) -> None:
    from dlvm_cluster.remote.extract import open_pull_folder

    shared, victim = tmp_path / "shared", tmp_path / "victim"
    shared.mkdir()
    victim.mkdir()
    (shared / "node-0").symlink_to(victim)  # planted by another local user
    with pytest.raises(RemoteError, match="a symlink"):
        open_pull_folder(shared, "node-0")
    (tmp_path / "link").symlink_to(victim)  # LOCAL itself
    with pytest.raises(RemoteError, match="a symlink"):
        open_pull_folder(tmp_path / "link", "node-0")
    assert not any(victim.iterdir())
    others = shared / "node-1"
    others.mkdir()
    others.chmod(0o777)  # a folder anyone can write in: anyone could plant in it
    with pytest.raises(RemoteError, match="anyone may write in it"):
        open_pull_folder(shared, "node-1")
    fd = open_pull_folder(shared, "node-2")  # made, 0700, and extracted into
    try:
        extract_stream(archive(file("authorized_keys")), fd)
    finally:
        os.close(fd)
    assert (shared / "node-2" / "authorized_keys").read_text() == "data"
    assert stat.S_IMODE((shared / "node-2").stat().st_mode) == 0o700


def test_a_pull_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    from dlvm_cluster.remote.extract import open_pull_folder

    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root")
    (tmp_path / "node-0").mkdir()
    os.chown(tmp_path / "node-0", 65534, 65534)
    with pytest.raises(RemoteError, match="belongs to another user"):
        open_pull_folder(tmp_path, "node-0")


def test_a_name_too_long_to_write_is_the_nodes_fault(pull: Path) -> None:
    name = "n" * 300_000
    with pytest.raises(RefusedMember) as caught:
        extract_stream(archive(file(name)), pull)
    assert caught.value.reason == "a name too long to write"
    assert caught.value.hint == HINT  # the node's doing, not this machine's disk
    assert len(str(caught.value)) < 400 and "(300000 characters)" in str(caught.value)


def test_a_pulled_tree_thousands_of_folders_deep_can_be_synced_up_again(pull: Path) -> None:
    from dlvm_cluster.remote.sync import scan_local

    depth = 1500  # past Python's recursion limit, within PATH_MAX
    path = "/".join(["d"] * depth)
    try:
        extract_stream(archive(folder(path), file(path + "/leaf")), pull)
        entries = scan_local(pull, [])
        assert len(entries) == depth + 1 and entries[-1].path == path + "/leaf"
    finally:  # GNU rm walks it without recursion (pytest's clean-up would not)
        subprocess.run(["rm", "-rf", str(pull / "d")], check=True)
