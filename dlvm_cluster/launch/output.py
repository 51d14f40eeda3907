"""What a failed job's summary quotes from its ranks' output: the first exception a rank
raised (its traceback's last lines), not the footer the launcher prints after it (torchrun's
`ChildFailedError` block, Accelerate's `CalledProcessError`, horovodrun's "one or more
processes exited"), which says only that a rank failed; and the lines about where training
started (a resumed snapshot or checkpoint) that some ranks printed and others did not.

Lines may carry a rank's tag from its launcher: `[rank3]: ` (torch), `[1]<stderr>:`
(horovodrun), `[1,2]<stderr>:` (mpirun --tag-output); the tag is kept in what is quoted and
ignored when reading the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TAG = re.compile(
    r"^(?:\[rank(?P<torch>\d+)\]:\s?|\[(?:\d+,)?(?P<launcher>\d+)\]<std(?:out|err)>:)"
)
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b")
LAUNCHER_FAILURES = (
    "ChildFailedError",
    "subprocess.CalledProcessError",
    "Horovod detected that one or more processes exited",
)
"""Exceptions a launcher raises because a rank failed: never the cause."""
_START_STATE = re.compile(r"(?i)\b(resum\w*|restor\w*|load(?:ed|ing)\b.*\b(?:checkpoint|snapshot))")
"""A line about the state a rank starts from (not one saving it, which rank 0 alone does)."""
CAUSE_LINES = 5  # the last two frames (file line, code line) and the exception
MAX_STATE_LINES = 5


def split_tag(text: str) -> tuple[str, str]:
    """(`rank N` or '', the line without its tag)."""
    tagged = _TAG.match(text)
    if not tagged:
        return "", text
    rank = tagged["torch"] or tagged["launcher"]
    return f"rank {rank}", text[tagged.end() :]


class RankOutput:
    """Reads one node's output as it streams: keeps its first exception and the lines about
    the state its ranks started from, by rank where lines are tagged."""

    def __init__(self) -> None:
        self.cause: list[str] = []
        self.start_state: dict[str, list[str]] = {}
        self._blocks: dict[str, list[str]] = {}

    def feed(self, text: str) -> None:
        rank, line = split_tag(text)
        if _START_STATE.search(line):
            said = self.start_state.setdefault(rank, [])
            if len(said) < MAX_STATE_LINES:
                said.append(line.strip())
        block = self._blocks.get(rank)
        if line.startswith(_TRACEBACK):
            self._blocks[rank] = [text]
            return
        if block is None:
            return
        if not line.strip() or line[:1].isspace() or line.startswith(_CHAINED):
            block.append(text)
            return
        del self._blocks[rank]  # the line that ends a traceback: the exception
        if self.cause or not _EXCEPTION.match(line):
            return
        if any(marker in line for marker in LAUNCHER_FAILURES):
            return
        frames = [kept for kept in block if split_tag(kept)[1].strip()]
        self.cause = [*frames[1:][-(CAUSE_LINES - 1) :], text]


def first_cause(outputs: Mapping[str, RankOutput], failed_first: str) -> tuple[str, list[str]]:
    """The node whose exception to quote and its lines: the node that failed first, else
    the first node that raised one; ('', []) when no rank raised a Python exception."""
    order = [failed_first, *[name for name in outputs if name != failed_first]]
    for name in order:
        output = outputs.get(name)
        if output is not None and output.cause:
            return name, output.cause
    return "", []


def disagreement(outputs: Mapping[str, RankOutput]) -> str:
    """A sentence when some ranks (or nodes) said they resumed or restored and others did not
    say the same: a job whose ranks start from different states fails in a collective with
    an error that hides why. '' when they agree."""
    said: dict[str, set[str]] = {}
    everyone: list[str] = []
    for node, output in outputs.items():
        for who, lines in output.start_state.items():
            name = f"{node} {who}" if who else node
            everyone.append(name)
            for line in lines:
                said.setdefault(re.sub(r"\d+", "N", line), set()).add(name)
        if not output.start_state:
            everyone.append(node)
    for pattern, names in said.items():
        others = [name for name in everyone if name not in names]
        if others:
            some = sorted(names)
            return (
                f"the ranks did not start from the same state: {', '.join(some)} printed "
                f"{_example(outputs, pattern)!r}; {', '.join(sorted(set(others)))} did not"
            )
    return ""


def _example(outputs: Mapping[str, RankOutput], pattern: str) -> str:
    for output in outputs.values():
        for lines in output.start_state.values():
            for line in lines:
                if re.sub(r"\d+", "N", line) == pattern:
                    return line
    return pattern


def gpu_hint(cause: list[str], gpus_per_node: int) -> str:
    """A word when a rank failed in CUDA or NCCL code on nodes that have no GPU."""
    text = " ".join(cause).lower()
    if gpus_per_node == 0 and ("cuda" in text or "nccl" in text):
        return "the nodes have no GPUs: a CUDA/NCCL script needs a CPU path (gloo, cpu tensors)"
    return ""


BUILDERS = frozenset(
    {"cc1plus", "cc1", "c++", "g++", "gcc", "ninja", "nvcc", "cicc", "ld", "collect2"}
)
"""Process names that mean native code is being compiled."""


def quiet_activity(names_by_node: Mapping[str, list[str]], quiet_for: float) -> str:
    """A line for a job that printed nothing for `quiet_for` seconds: what its processes are,
    and, when they compile, that this is a first build (DeepSpeed builds its ops on first use,
    for minutes, printing nothing). '' when no node reported a process."""
    parts = []
    building = False
    for node, names in names_by_node.items():
        if not names:
            continue
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        builders = {name: n for name, n in counts.items() if name in BUILDERS}
        building = building or bool(builders)
        shown = builders or counts
        said = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(shown.items())[:6])
        parts.append(f"{node}: {'compiling (' + said + ')' if builders else said}")
    if not parts:
        return ""
    line = f"no output for {quiet_for:.0f}s; " + "; ".join(parts)
    if building:
        line += (
            " - a first build of native ops (DeepSpeed compiles them on first use); later "
            "runs reuse them from TORCH_EXTENSIONS_DIR, which storage can share between nodes"
        )
    return line
