"""Every read of a node's output is bounded: a short command's stdout, its stderr (read beside
stdout, so that a node filling it cannot stall the command), and a push destination's listing.
The channel is a stand-in that behaves as a hostile node's would: endless output, or stdout
held back until stderr has been read (as SSH's shared window does once stderr fills it)."""

from __future__ import annotations

import threading

import pytest

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.remote import sync
from dlvm_cluster.remote.connection import MAX_ERRORS, Connection

NODE = Node("node-0", 0, "192.0.2.1", 22, "dlvm", "ssh-ed25519 AAAA")


class HostileChannel:
    """`stdout` and `stderr`: how many bytes each sends (None: without end). With
    `stdout_waits_for_stderr`, stdout sends nothing until all of stderr was read."""

    def __init__(
        self, stdout: int | None, stderr: int | None, *, stdout_waits_for_stderr: bool = False
    ) -> None:
        self.left = {"out": stdout, "err": stderr}
        self.stderr_drained = threading.Event()
        self.waits = stdout_waits_for_stderr
        self.closed = threading.Event()
        if stderr == 0:
            self.stderr_drained.set()

    def _take(self, stream: str, size: int, byte: bytes) -> bytes:
        left = self.left[stream]
        if self.closed.is_set() or left == 0:
            if stream == "err":
                self.stderr_drained.set()
            return b""
        size = size if left is None else min(size, left)
        if left is not None:
            self.left[stream] = left - size
        return byte * size

    def recv(self, size: int) -> bytes:
        if self.waits and not self.stderr_drained.wait(20):
            raise AssertionError("stdout was read alone while stderr filled the window")
        return self._take("out", size, b"o")

    def recv_stderr(self, size: int) -> bytes:
        return self._take("err", size, b"e")

    def exec_command(self, command: str) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        self.closed.set()


class StandInConnection(Connection):
    def __init__(self, channel: HostileChannel) -> None:
        self.node = NODE
        self._channel = channel

    def channel(self) -> HostileChannel:  # type: ignore[override]
        return self._channel


def test_a_short_commands_endless_stdout_is_refused() -> None:
    with pytest.raises(RemoteError, match="sent more than 1000 bytes of output"):
        StandInConnection(HostileChannel(None, 0)).run("cat config.json", limit=1000)


def test_stderr_is_read_beside_stdout_and_its_start_kept() -> None:
    channel = HostileChannel(10, 50 * MAX_ERRORS, stdout_waits_for_stderr=True)
    code, out, err = StandInConnection(channel).run("date")
    assert (code, out) == (0, "o" * 10)
    assert err == "e" * MAX_ERRORS


def test_a_listing_that_never_ends_is_refused() -> None:
    with pytest.raises(RemoteError, match="listing of the destination passed 4096 bytes"):
        sync._read_listing(HostileChannel(None, 0), "node-0", limit=4096)  # type: ignore[arg-type]


def test_output_without_a_newline_is_shown_in_pieces_not_buffered_without_end() -> None:
    from dlvm_cluster.remote.fanout import MAX_LINE_BYTES, Cancellation, _NodeRun

    lines: list[str] = []
    run = _NodeRun(
        NODE,
        None,  # type: ignore[arg-type]  # never connects: only fed output
        "true",
        sink=lambda node, stream, line: lines.append(line),
        timeout=None,
        cancel=Cancellation(),
        log=None,
        redact=str,
    )
    chunk = b"x" * (1 << 16)
    for _ in range(3 * MAX_LINE_BYTES // len(chunk)):  # 3 MiB, no newline
        run._feed("out", chunk)
    assert len(run._partial["out"]) <= MAX_LINE_BYTES
    assert [len(line) for line in lines] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    run._feed("out", b"end\n")
    run._feed("out", b"", final=True)
    assert lines[-1].endswith("xend") and len(lines) == 3
