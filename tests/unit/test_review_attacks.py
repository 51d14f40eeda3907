"""Attacks of the second security review, replayed as tables where no other test holds them:
tar streams a node may send to `sync --down`, storage mount spellings, characters node
output may hold. Each row is one attack; whatever it does, the defence must hold: nothing
written outside the pull folder and no error but the node's; a mount over the system or a
home's keys refused; no character that acts on or reorders a terminal shown as it is."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest
from crafted_tar import Member, archive, file, folder, link, special

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.progress import show_controls
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.gcp.storage import storage_script
from dlvm_cluster.remote.extract import extract_stream
from dlvm_cluster.spec.model import StorageMount

GCP = (
    "name: demo\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
    "  zones: [us-central1-a]\n  allowed_ssh_cidrs: [203.0.113.0/24]\nnodes: {count: 2}\n"
)


def pax(name: str, headers: dict[str, str], data: bytes = b"data") -> Member:
    info, payload = file(name, data)
    info.pax_headers = headers
    return info, payload


def typed(name: str, kind: bytes) -> Member:
    info, payload = file(name)
    info.type = kind
    return info, payload


def moded(name: str, mode: int, mtime: int) -> Member:
    return file(name, b"x", mode=mode, mtime=mtime)


def global_header(headers: dict[str, str]) -> io.BytesIO:
    """A PAX global header (applies to every member after it), then a plain file."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers=headers
    ) as tar:
        info, data = file("plain")
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def base256_size(negative: bool, kind: bytes) -> io.BytesIO:
    """A member whose size field is base-256 (negative: the shape of CVE-2025-8194)."""
    info, _ = file("n", b"")
    info.type = kind
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    size = (b"\xff" * 12) if negative else (b"\x80" + b"\x00" * 7 + (1 << 30).to_bytes(4, "big"))
    block[124:136] = size
    block[148:156] = b" " * 8
    checksum = sum(block[:512])
    block[148:156] = f"{checksum:06o}\0 ".encode()
    return io.BytesIO(bytes(block) + bytes(1024))


def truncated() -> io.BytesIO:
    whole = archive(file("big", b"x" * 4096)).getvalue()
    return io.BytesIO(whole[:1024])


NAMES = {
    "lf": "a\nb",
    "cr": "a\rb",
    "esc": "a\x1b]52;c;x\x07b",
    "u2028": "a\u2028b",
    "u0085": "a\x85b",
}
TAR_ATTACKS: dict[str, list[Member] | io.BytesIO] = {
    **{f"name with {key}": [file(name)] for key, name in NAMES.items()},
    "gnu hardlink absolute": [link("h", "/etc/passwd", tarfile.LNKTYPE)],
    "gnu hardlink inside then overwrite": [file("t"), link("h", "t", tarfile.LNKTYPE), file("h")],
    "pax hardlink": [pax("h", {"linkpath": "../outside/secret"}, b"")],
    "fifo": [special("f", tarfile.FIFOTYPE)],
    "char device": [special("c", tarfile.CHRTYPE)],
    "block device": [special("b", tarfile.BLKTYPE)],
    "contiguous file (7)": [typed("c7", tarfile.CONTTYPE)],
    "gnu volume header V": [typed("v", b"V")],
    "gnu multivolume M": [typed("m", b"M")],
    "old gnu sparse S": [typed("s", b"S")],
    "gnu dumpdir D": [typed("d", b"D")],
    "unknown type Z": [typed("z", b"Z")],
    "absolute //etc/x": [file("//etc/x")],
    "absolute /": [folder("/")],
    "absolute /../x": [file("/../x")],
    "absolute via pax path": [pax("x", {"path": "/etc/dlvm-review"})],
    "a/./../../x": [file("a/./../../x")],
    "a//..//..": [file("a//..//..")],
    ".././x": [file(".././x")],
    "pax path=x/..": [pax("x", {"path": "x/.."})],
    "pax global path=../outside/secret": global_header({"path": "../outside/secret"}),
    "symlink then folder through it": [link("l", "../outside"), folder("l/d")],
    "symlink then symlink through it": [link("l", "sub"), folder("sub"), link("l/s", "../..")],
    "link replaced by a folder": [link("l", "."), folder("l"), file("l/x")],
    "d/e/s -> ../.. then d/e/s/..": [folder("d/e"), link("d/e/s", "../.."), file("d/e/s/../x")],
    "s -> .. then s/../x": [link("s", ".."), file("s/../x")],
    "a -> . then a/a/a/a then a file": [link("a", "."), file("a/a/a/a/x")],
    "./.././../x": [file("./.././../x")],
    "backslashes": [file("..\\..\\outside\\x"), link("b", "..\\..\\outside")],
    "trailing ../": [link("t", "sub/../../")],
    "1 MB pax name": [pax("x", {"path": "n" * (1 << 20)})],
    "2000-deep path": [file("/".join(["d"] * 2000) + "/x")],
    "negative base-256 size, regular": base256_size(True, tarfile.REGTYPE),
    "negative base-256 size, unknown type": base256_size(True, b"Z"),
    "pax 1.0 sparse of 1 TB": [
        pax(
            "sp",
            {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(1 << 40)},
        )
    ],
    "truncated mid-file": truncated(),
    "mode 07777, mtime -1e18": [moded("m", 0o7777, -(10**18))],
    "pax xattr, capability, acl, uid": [
        pax(
            "x",
            {
                "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                "SCHILY.acl.access": "user::rwx",
                "uid": "0",
                "uname": "root",
            },
        )
    ],
    "400 MB pax header": io.BytesIO(),  # built below: announces it, sends zeros
}


def _huge_pax() -> io.BytesIO:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 400 << 20
    return io.BytesIO(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 20))


def _stream(attack: list[Member] | io.BytesIO, name: str) -> io.BytesIO:
    if name == "400 MB pax header":
        return _huge_pax()
    if isinstance(attack, io.BytesIO):
        attack.seek(0)
        return attack
    return archive(*attack)


def _outside(root: Path, pull: Path) -> dict[str, bytes]:
    found = {}
    for base, dirs, files in os.walk(root):
        if Path(base) == root:
            dirs[:] = [d for d in dirs if root / d != pull]
        for entry in dirs + files:
            path = Path(base) / entry
            found[str(path)] = b"" if path.is_dir() or path.is_symlink() else path.read_bytes()
    return found


@pytest.mark.parametrize("name", list(TAR_ATTACKS))
def test_a_crafted_tar_stream_writes_nothing_outside_the_pull_folder(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("original")
    pull = tmp_path / "pull"
    pull.mkdir()
    (pull / "sub").mkdir()
    before = _outside(tmp_path, pull)
    try:
        extract_stream(_stream(TAR_ATTACKS[name], name), pull)
    except (RemoteError, tarfile.TarError):
        pass  # refused, naming the member (a TarError: `pull` names the node's bad stream)
    finally:
        after = _outside(tmp_path, pull)
        deep = pull / "d"
        if deep.exists():  # the 2000-deep tree: GNU rm walks it without recursion
            os.system(f"rm -rf {deep}")
    assert after == before
    for base, _, files in os.walk(pull):
        for entry in files:
            path = Path(base) / entry
            if path.is_symlink():
                target = (path.parent / os.readlink(path)).resolve()
                assert target.is_relative_to(pull.resolve()), path
            else:
                assert not path.stat().st_mode & 0o7000, path  # no setuid, setgid, sticky


MOUNTS_REFUSED = [
    "/home/dlvm/.ssh",
    "/root/.ssh",
    "/home/dlvm/.dlvm",
    "/home/dlvm/.dlvm/node-files",
    "/root/.dlvm",
    "/var/lock",
    "/var/lock/x",
    "/usr/../etc",
    "/ckpt x",
    "/ckpt'x",
    "/ckpt$x",
    "/lib/modules",
    "/etc",
    "/",
    "/home/dlvm",
    "/run/lock",
    "/var/lib/dlvm",
]
# Harmless spellings: a folder of its own, however it is written; the scripts that mount it
# quote it (no line, comment or command can come of it).
MOUNTS_TAKEN = [
    "/HOME/dlvm",
    "/nix/store",
    "/-ckpt",
    "/ckpt%i",
    "/ckpt*",
    "/data/ckpt",
    "/ckpt\u2028x",
    "/ckpt\u00a0x",
    "/ckpt;rm",
    "/ckpt#x",
]


@pytest.mark.parametrize("mount", MOUNTS_REFUSED)
def test_a_mount_spelling_over_the_system_or_a_homes_keys_is_refused(mount: str) -> None:
    with pytest.raises(ValueError):
        StorageMount(mount=mount, bucket="gs://my-bucket")


@pytest.mark.parametrize("mount", MOUNTS_TAKEN)
def test_a_mount_of_a_folder_of_its_own_is_taken_and_quoted(mount: str) -> None:
    assert StorageMount(mount=mount, bucket="gs://my-bucket").mount == mount
    spec = load_spec_text(
        GCP + f"storage:\n  - {{mount: {json.dumps(mount)}, bucket: gs://b-1}}\n", Path("c.yaml")
    ).spec
    script = storage_script(spec)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # Quoted wherever a shell or systemd reads it as a word; the unit's Description and the
    # failure message (inside a quoted string) are text.
    unquoted = [
        line for line in script.replace(shlex.quote(mount), "").split("\n") if mount in line
    ]
    assert all(
        line.startswith("Description=dlvm storage ") or line.lstrip().startswith("echo '")
        for line in unquoted
    ), unquoted


TERMINAL = {
    "ESC / OSC 52": "\x1b]52;c;eA==\x07",
    "CR": "\r",
    "BEL": "\x07",
    "DEL": "\x7f",
    "U+009B (CSI)": "\x9b",
    "U+0085 (NEL)": "\x85",
    "U+2028": "\u2028",
    "U+2029": "\u2029",
    "U+202E": "\u202e",
    "U+2066 / U+2069": "\u2066x\u2069",
    "ZWJ": "\u200d",
}


@pytest.mark.parametrize("name", list(TERMINAL))
def test_a_character_that_acts_on_or_reorders_a_terminal_is_escaped(name: str) -> None:
    shown = show_controls(f"[node-0] {TERMINAL[name]} done")
    assert all(char.isprintable() for char in shown), repr(shown)


def test_an_invalid_byte_is_shown_as_the_replacement_character() -> None:
    """A node's invalid UTF-8 is decoded with replacement: U+FFFD, printable and inert."""
    line = b"ok \xff done".decode(errors="replace")
    assert show_controls(line) == "ok \ufffd done"
