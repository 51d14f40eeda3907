"""What `dlvm check` reads from a node's output: the node program's result lines, and the
sections its shell part prints (nvidia-smi's CSV, the driver's CUDA version, Xid lines).

A node's output is the node's to choose: it is bounded as it arrives (`Collected`), parsed
only from the forms these functions know, and every string kept from it is cut short. The
findings they return are plain values; judging them is check.py's.
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.nodeside.netcheck import MARKER
from dlvm_cluster.remote import node_json

SECTION = "@dlvm-section "
MAX_LINES = 400  # lines kept per node and run, from the first
MAX_RESULTS = 256  # result lines kept besides
LAST_LINES = 20  # and the last lines
MAX_LINE = 2000  # characters kept per line
MAX_TEXT = 200  # characters of a node's string shown in a finding
_CUDA_VERSION = re.compile(r"CUDA Version\s*:?\s*([0-9][0-9.]{0,15})")
_XID = re.compile(r"NVRM: Xid \(([^)]{0,64})\): (\d{1,4})\b")
_UNITS = re.compile(r"\s*\[[^\]]*\]$")
_NOT_REPORTED = {"", "[n/a]", "n/a", "[not supported]", "not supported", "[unknown error]"}


def short(text: str, limit: int = MAX_TEXT) -> str:
    """A node's string cut to `limit` characters (display escapes its controls)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Collected:
    """One node's output, bounded: the first MAX_LINES lines, the program's result lines
    (up to MAX_RESULTS more, wherever they come: eight GPU processes' warnings must not push
    them out) and the last LAST_LINES (where an error ends), each cut to MAX_LINE."""

    kept: list[str] = field(default_factory=list)
    last: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES))
    kept_results: int = 0
    dropped: int = 0

    def add(self, line: str) -> None:
        line = line[:MAX_LINE]
        if line.startswith(MARKER) and self.kept_results < MAX_RESULTS:
            self.kept_results += 1
            self.kept.append(line)
        elif len(self.kept) - self.kept_results < MAX_LINES:
            self.kept.append(line)
        else:
            if len(self.last) == self.last.maxlen:
                self.dropped += 1
            self.last.append(line)

    @property
    def lines(self) -> list[str]:
        return [*self.kept, *self.last]


def results(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The node program's result objects (MARKER lines whose JSON is an object with a kind)."""
    found = []
    for line in lines:
        if not line.startswith(MARKER):
            continue
        try:
            data = node_json.loads_object(line[len(MARKER) :], max_bytes=MAX_LINE)
        except node_json.NodeJsonError:
            continue  # not a result: the line stays among the node's output
        if isinstance(data.get("kind"), str):
            found.append(data)
    return found


def first(found: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((item for item in found if item.get("kind") == kind), None)


def number(value: object) -> float | None:
    """A finite, non-negative number from a node's JSON, else None."""
    checked = node_json.finite(value)
    return checked if checked is not None and checked >= 0 else None


def sections(lines: Iterable[str]) -> dict[str, list[str]]:
    """The lines under each `@dlvm-section NAME` line, by NAME (a repeated name: the first)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(SECTION):
            name = line[len(SECTION) :].strip()
            current = None if name in found else found.setdefault(name, [])
        elif current is not None and not line.startswith(MARKER):
            current.append(line)
    return found


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it; None where it reports nothing (N/A)."""

    index: str
    name: str
    driver: str
    ecc_uncorrected: int | None
    remap_pending: bool
    remap_failure: bool


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[Gpu, ...]
    problem: str  # why nvidia-smi's output could not be read ("" when it could)


def _flag(value: str) -> bool:
    """A Yes/No (or 1/0) field: True only for a yes; N/A is no."""
    text = value.strip().lower()
    return text in {"yes", "1", "true"} or (text.isdigit() and int(text) > 0)


def _count(value: str) -> int | None:
    text = value.strip()
    if text.lower() in _NOT_REPORTED or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def parse_gpus(lines: Iterable[str]) -> GpuReport:
    """`nvidia-smi --query-gpu=... --format=csv,nounits`: a header naming the fields (units
    in brackets are dropped), then one row per GPU. Fields it lacks count as not reported."""
    rows = [line for line in lines if line.strip()]
    if not rows:
        return GpuReport((), "nvidia-smi printed nothing")
    parsed = list(csv.reader(rows, skipinitialspace=True))
    header = [_UNITS.sub("", name.strip()) for name in parsed[0]]
    if "index" not in header:
        return GpuReport((), f"nvidia-smi failed: {short(rows[0])}")
    gpus: list[Gpu] = []
    for row in parsed[1:]:
        if len(row) != len(header):
            return GpuReport(tuple(gpus), f"unexpected nvidia-smi line: {short(','.join(row))}")
        value = dict(zip(header, (cell.strip() for cell in row), strict=True))
        gpus.append(
            Gpu(
                index=short(value["index"], 8),
                name=short(value.get("name", ""), 64),
                driver=short(value.get("driver_version", ""), 32),
                ecc_uncorrected=_count(value.get("ecc.errors.uncorrected.volatile.total", "")),
                remap_pending=_flag(value.get("remapped_rows.pending", "")),
                remap_failure=_flag(value.get("remapped_rows.failure", "")),
            )
        )
    return GpuReport(tuple(gpus), "")


def parse_cuda_version(lines: Iterable[str]) -> str:
    """The CUDA version the driver supports, from nvidia-smi's banner ("" when not shown)."""
    for line in lines:
        match = _CUDA_VERSION.search(line)
        if match:
            return match.group(1).rstrip(".")
    return ""


# Xid codes that mean the GPU or its memory or links need attention (NVIDIA's Xid catalog):
# ECC double-bit and uncontained errors, row remapping, fallen off the bus, NVLink, GSP.
CRITICAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120})


@dataclass(frozen=True)
class Xid:
    device: str
    code: int

    @property
    def critical(self) -> bool:
        return self.code in CRITICAL_XIDS


def parse_xids(lines: Iterable[str]) -> tuple[Xid, ...]:
    """The kernel's `NVRM: Xid (PCI:...): CODE, ...` lines."""
    found = []
    for line in lines:
        match = _XID.search(line)
        if match:
            found.append(Xid(device=short(match.group(1), 64), code=int(match.group(2))))
    return tuple(found)
