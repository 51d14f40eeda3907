"""What a node prints that dlvm parses: the push's file listing (names may hold tabs and
newlines) and the PID marker a command starts with (a node may print a bogus one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dlvm_cluster.inventory import Node
from dlvm_cluster.remote.command import PID_MARKER
from dlvm_cluster.remote.fanout import Cancellation, _NodeRun, marked_pid
from dlvm_cluster.remote.sync import LISTING, listing_end, parse_listing

NASTY_NAMES = [
    "tab\there",
    "new\nline",
    "a\tf\tx\ty\tz\t\nb",  # the start of a tab-separated record of its own, then a newline
    "dlvm-listed\n",  # the end marker of the old listing, less its NUL
    " lead and trail ",
]


def test_names_with_tabs_and_newlines_are_listed_and_parsed(tmp_path: Path) -> None:
    for name in NASTY_NAMES:
        (tmp_path / name).write_text(name)
    (tmp_path / "sub\tdir").mkdir()
    (tmp_path / "sub\tdir" / "link\n").symlink_to("../tab\there")
    # The node side for real: find prints the listing (then tar would read stdin).
    output = subprocess.run(
        ["sh", "-c", f"{LISTING} && echo tar output follows"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    data, scanned, end = b"", 0, None
    for byte in output:  # as it comes over the channel, a byte at a time at worst
        data += bytes([byte])
        end, scanned = listing_end(data, scanned)
        if end is not None:
            break
    assert end is not None and output[end:] == b"\0tar output follows\n"
    entries = parse_listing(data[:end])
    assert set(entries) == {*NASTY_NAMES, "sub\tdir", "sub\tdir/link\n"}
    assert entries["a\tf\tx\ty\tz\t\nb"].size == len("a\tf\tx\ty\tz\t\nb")
    assert entries["sub\tdir"].kind == "d"
    assert entries["sub\tdir/link\n"].target == "../tab\there"


def test_the_listing_end_is_not_found_before_it_comes() -> None:
    record = b"name\0f\x001\x002.5\x00644\0\0"
    assert listing_end(record) == (None, len(record))
    assert listing_end(record[:-3]) == (None, 0)
    assert listing_end(record + b"\0") == (len(record), len(record))


@pytest.mark.parametrize(
    "listing",
    [
        b"a\0f\0x\0y\0z\0\0",  # numbers that are not numbers
        b"a\0f\x001\x002\x00999\0\0",  # not octal
        b"a\0f\x001",  # cut short
        b"\xff\xfe\0f\0\0\0\0\0",
    ],
)
def test_a_malformed_listing_record_is_left_out(listing: bytes) -> None:
    good = b"ok\0f\x003\x001700000000.5\x00600\0\0"
    entries = parse_listing(good + listing)
    assert list(entries) == ["ok"]
    assert (entries["ok"].size, entries["ok"].mtime, entries["ok"].mode) == (3, 1700000000, 0o600)


@pytest.mark.parametrize(
    ("line", "pid"),
    [
        (f"{PID_MARKER}4242", 4242),
        (f"{PID_MARKER}abc", None),
        (f"{PID_MARKER}", None),
        (f"{PID_MARKER}-5", None),
        (f"{PID_MARKER}1", None),  # the node's init
        (f"{PID_MARKER}٣", None),  # a digit, not an ASCII one
        (f"{PID_MARKER}{'9' * 5000}", None),  # more digits than int() takes
    ],
)
def test_a_pid_marker_is_read_only_when_it_holds_a_pid(line: str, pid: int | None) -> None:
    assert marked_pid(line) == pid


def test_a_bogus_pid_marker_is_shown_as_output_and_the_real_one_still_read() -> None:
    node = Node(name="node-0", rank=0, ip="10.0.0.2", port=22, user="u", host_key="k")
    lines: list[tuple[str, str]] = []
    run = _NodeRun(
        node,
        None,  # type: ignore[arg-type]  # never connects: only fed output
        "true",
        sink=lambda node, stream, line: lines.append((stream, line)),
        timeout=None,
        cancel=Cancellation(),
        log=None,
        redact=str,
    )
    run._feed("err", f"{PID_MARKER}abc\n{PID_MARKER}4242\nreal\n".encode())
    assert run.pid == 4242
    assert lines == [("err", f"{PID_MARKER}abc"), ("err", "real")]
