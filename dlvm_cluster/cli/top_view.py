"""How `dlvm top` draws one frame: a table of nodes (and their GPUs beneath them), the job."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dlvm_cluster.orchestrate.watch.metrics import (
    NOT_ANSWERING,
    PROBE_FAILED,
    REFRESH_S,
    REFUSED,
    Frame,
    GpuSample,
    NodeSample,
)
from dlvm_cluster.progress import show_controls

_UNITS = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3))


def size(value: float | None) -> str:
    """Bytes in decimal units, one decimal: `12.3G`; '-' when unknown."""
    if value is None:
        return "-"
    for unit, scale in _UNITS:
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _of(used: float | None, total: float | None) -> str:
    return f"{size(used)}/{size(total)}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _bar(value: float | None, width: int = 5) -> Text:
    """`[#####     ] 52%`, coloured by how busy."""
    if value is None:
        return Text("-")
    filled = round(width * min(100.0, value) / 100)
    colour = "green" if value < 60 else "yellow" if value < 90 else "red"
    text = Text("▕")
    text.append("█" * filled, style=colour)
    text.append(" " * (width - filled) + "▏")
    text.append(f"{value:4.0f}%")
    return text


def _gpu_cells(gpu: GpuSample) -> str:
    """`67°C  612W`: what the GPU row has no column for."""
    parts = []
    if gpu.temperature_c is not None:
        parts.append(f"{gpu.temperature_c:.0f}°C")
    if gpu.power_w is not None:
        parts.append(f"{gpu.power_w:.0f}W")
    return "  ".join(parts)


SHORT = {NOT_ANSWERING: "no answer", PROBE_FAILED: "failed", REFUSED: "refused"}


def render(frame: Frame, *, live: bool = False) -> RenderableType:
    """The table of nodes (each node's GPUs beneath it), then a line per node that needs a
    word (not answering, far below the others, GPUs unreadable), then the job. Fits 80
    columns: light rules, numbers never wrapped."""
    when = time.strftime("%H:%M:%S", time.localtime(frame.taken_at))
    answered = sum(node.answered for node in frame.nodes)
    title = (
        f"cluster {escape(frame.cluster)}  {answered}/{len(frame.nodes)} node(s) answering  {when}"
    )
    if live:
        title += f"  (every {REFRESH_S:g}s; Ctrl-C leaves)"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column, justify in (
        ("node", "left"),
        ("cpu", "left"),
        ("memory", "right"),
        ("load", "right"),
        ("disk", "right"),
        ("rx/s", "right"),
        ("tx/s", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    notes: list[RenderableType] = []
    for node in frame.nodes:
        _add_node(table, node)
        notes.extend(_notes(node))
    parts: list[RenderableType] = [table, *notes]
    if frame.job is not None:
        job = frame.job
        line = Text(f"job {job.id}  {job.state}  restarts {job.restarts}")
        if job.latest:
            line.append("  " + show_controls(job.latest), style="dim")
        parts.append(line)
    return Group(*parts)


def _add_node(table: Table, node: NodeSample) -> None:
    name = Text(node.name, style="bold red" if node.lagging or not node.answered else "bold")
    if not node.answered:
        table.add_row(name, Text(SHORT.get(node.status, node.status), style="red"))
        return
    table.add_row(
        name,
        _bar(node.cpu_percent),
        _of(node.memory_used_bytes, node.memory_total_bytes),
        " ".join(f"{value:.1f}" for value in node.load) or "-",
        _of(node.disk_used_bytes, node.disk_total_bytes),
        size(node.net_rx_bytes_per_s),
        size(node.net_tx_bytes_per_s),
    )
    for gpu in node.gpus:
        table.add_row(
            Text(f"  gpu {gpu.index}", style="cyan"),
            _bar(gpu.util_percent),
            _of(gpu.memory_used_bytes, gpu.memory_total_bytes),
            Text(_gpu_cells(gpu), style="dim"),
        )


def _notes(node: NodeSample) -> list[Text]:
    """The lines under the table about this node: words that may come from the node are
    text, never markup, their control characters escaped."""
    notes = []
    if not node.answered:
        notes.append(Text(f"{node.name} {node.status}: {_why(node.error)}", style="red"))
    if node.lagging:
        notes.append(Text(f"{node.name} {node.lagging}", style="red"))
    if node.gpu_error:
        notes.append(Text(f"{node.name} GPUs unreadable: {_why(node.gpu_error)}", style="yellow"))
    return notes


def _why(text: str) -> str:
    return show_controls(text)[:160]
