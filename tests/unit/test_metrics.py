"""`dlvm top`'s pieces without a cluster: the node program run here (with a stand-in
nvidia-smi printing recorded samples), the reading of its answer as hostile input, the
marking of a node far below the others, and the `--json` document's exact shape."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dlvm_cluster import nodeside
from dlvm_cluster.cli import documents
from dlvm_cluster.inventory import Node
from dlvm_cluster.nodeside import metrics as probe
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.watch.metrics import (
    MARKER,
    NOT_ANSWERING,
    OK,
    PROBE_FAILED,
    REFUSED,
    Frame,
    GpuSample,
    JobLine,
    NodeSample,
    latest_step,
    log_tail,
    mark_lagging,
    probe_command,
    read_sample,
    why_silent,
)
from dlvm_cluster.remote.results import CommandResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia_smi"
NODE = Node(name="node-1", rank=1, ip="10.0.0.2", port=22, user="root", host_key="")
MIB = 1 << 20


def _stand_in(folder: Path, body: str) -> Path:
    """A folder holding an `nvidia-smi` that runs `body` (shell), for PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "nvidia-smi"
    program.write_text("#!/bin/sh\n" + body)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return folder


def _run_probe(path: str, **env: str) -> dict[str, object]:
    """The node program as a refresh runs it: its source through `python3 -c`."""
    source = nodeside.source("metrics").decode()
    done = subprocess.run(
        [sys.executable, "-c", source, "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": path, **env},
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, done.stdout
    data: dict[str, object] = json.loads(lines[0][len(MARKER) :])
    return data


def test_probe_reads_this_machine_and_a_recorded_nvidia_smi(tmp_path: Path) -> None:
    sample = FIXTURES / "h100x8_util.csv"
    # The stand-in answers only the query top makes, as nvidia-smi prints it.
    folder = _stand_in(
        tmp_path / "bin",
        f'[ "$1" = "--query-gpu={probe.GPU_FIELDS}" ] && [ "$2" = "--format=csv,noheader,nounits" ]'
        f" && exec cat {sample}\nexit 6\n",
    )
    data = _run_probe(f"{folder}:{os.environ['PATH']}")
    assert 0.0 <= data["cpu_percent"] <= 100.0  # type: ignore[operator]
    assert 0 < data["memory_used_bytes"] <= data["memory_total_bytes"]  # type: ignore[operator]
    assert data["disk"]["total_bytes"] > 0  # type: ignore[index]
    assert len(data["load"]) == 3  # type: ignore[arg-type]
    node = read_sample(NODE, [MARKER + json.dumps(data)])
    assert node.answered, node.error
    assert [gpu.index for gpu in node.gpus] == list(range(8))
    assert node.gpus[0] == GpuSample(0, 97.0, 71234 * MIB, 81559 * MIB, 67.0, 612.45)
    assert node.gpus[5].util_percent == 4.0
    assert node.gpus[7].power_w is None  # [N/A]
    assert node.busy_percent(gpus=True) == pytest.approx((97 + 96 + 98 + 97 + 95 + 4 + 97 + 96) / 8)


def test_probe_says_why_the_gpus_cannot_be_read(tmp_path: Path) -> None:
    mismatch = FIXTURES / "nvml_mismatch.txt"
    folder = _stand_in(tmp_path / "bin", f"cat {mismatch}; exit 18\n")
    data = _run_probe(f"{folder}:{os.environ['PATH']}")
    node = read_sample(NODE, [MARKER + json.dumps(data)])
    assert node.answered and node.gpus == ()
    assert (
        node.gpu_error == "nvidia-smi: Failed to initialize NVML: Driver/library version mismatch"
    )


def test_probe_without_nvidia_smi_reports_no_gpus(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    data = _run_probe(str(python_only))  # no nvidia-smi on this PATH
    assert "gpus" not in data and "gpu_error" not in data
    assert data["scope"] == "machine"


def test_a_node_sharing_its_kernel_counts_its_own_processes(tmp_path: Path) -> None:
    """DLVM_SHARED_KERNEL=1 (the local provider's nodes): the processes of this network
    namespace, not /proc/stat and /proc/meminfo, which every such node would read alike."""
    data = _run_probe(os.environ["PATH"], DLVM_SHARED_KERNEL="1")
    assert data["scope"] == "namespace"
    assert 0 < data["memory_used_bytes"] < data["memory_total_bytes"]  # type: ignore[operator]


def test_values_the_driver_does_not_report_are_unknown() -> None:
    gpus = probe.parse_gpus((FIXTURES / "v100x2_unsupported.csv").read_text())
    assert gpus[0]["util_percent"] is None and gpus[0]["power_w"] == 24.17
    assert gpus[1]["memory_used_bytes"] is None and gpus[1]["temperature_c"] is None
    # A banner, a header or an error line is no GPU.
    assert probe.parse_gpus((FIXTURES / "banner.txt").read_text()) == []
    assert probe.parse_gpus((FIXTURES / "h100x8_healthy.csv").read_text()) == []


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("not json", "not JSON"),
        ('{"cpu_percent": "100"}', "cpu_percent is '100', not a number from 0 to 100"),
        ('{"cpu_percent": 1e9}', "cpu_percent is 1000000000.0, not a number from 0 to 100"),
        ('{"cpu_percent": NaN}', "not JSON"),
        ('{"memory_used_bytes": true}', "memory_used_bytes is True, not a number"),
        ('{"memory_used_bytes": 1.5}', "memory_used_bytes is 1.5, not a whole number"),
        ('{"gpus": [{"util_percent": 5}]}', "a GPU without an index"),
        ('{"gpus": [7]}', "a GPU is a int, not an object"),
        ('{"gpus": {"index": 0}}', "gpus is not a list of at most 64"),
        ('{"gpus": [' + ",".join(['{"index": 0}'] * 65) + "]}", "not a list of at most 64"),
        ('{"load": [1, 2, 3, 4]}', "load is not a list of at most 3"),
        ('{"load": ["high"]}', "load is 'high', not a number"),
        ('{"disk": ' + "[" * 50 + "]" * 50 + "}", "nested more than 16 levels deep"),
        ("[1, 2]", "a list, not an object"),
        ('{"pad": "' + "x" * 300_000 + '"}', "more than 65536"),
    ],
)
def test_a_lying_node_is_shown_as_such_never_believed(answer: str, why: str) -> None:
    node = read_sample(NODE, ["noise", MARKER + answer])
    assert not node.answered and node.status == REFUSED
    assert why in node.error, node.error
    assert len(node.error) < 200  # the node's text is not repeated back


def test_a_node_that_printed_nothing_says_why() -> None:
    timed_out = CommandResult("node-1", 1, error="timed out after 10s")
    assert why_silent(timed_out) == (NOT_ANSWERING, "timed out after 10s")
    no_python = CommandResult("node-1", 1, exit_code=127)
    no_python.tail.append("sh: 1: python3: not found")
    assert why_silent(no_python) == (PROBE_FAILED, "exit 127: sh: 1: python3: not found")
    sample = read_sample(NODE, ["hello"], why_silent(CommandResult("node-1", 1, exit_code=0)))
    assert (sample.status, sample.error) == (PROBE_FAILED, "it printed no answer")


def _node(name: str, cpu: float | None, gpus: tuple[float, ...] = ()) -> NodeSample:
    return NodeSample(
        name,
        0,
        status=OK if cpu is not None else NOT_ANSWERING,
        cpu_percent=cpu,
        gpus=tuple(GpuSample(i, util, None, None, None, None) for i, util in enumerate(gpus)),
    )


def test_a_node_far_below_the_others_is_marked() -> None:
    marked = mark_lagging([_node("a", 48.0), _node("b", 52.0), _node("c", 3.0)])
    assert [node.lagging != "" for node in marked] == [False, False, True]
    assert marked[2].lagging == "far below the others: CPU 3% against a median of 48%"
    # One busy node among idle ones: nobody lags (the median is idle).
    assert not any(
        n.lagging for n in mark_lagging([_node("a", 90.0), _node("b", 1), _node("c", 0)])
    )
    # An idle cluster marks none; a node that did not answer is not compared.
    assert not any(n.lagging for n in mark_lagging([_node("a", 8.0), _node("b", 0.5)]))
    assert not any(n.lagging for n in mark_lagging([_node("a", 50.0), _node("b", None)]))


def test_with_gpus_the_gpus_decide() -> None:
    # Busy CPUs everywhere (data loading), but node c's GPUs idle: c is the straggler.
    nodes = [_node("a", 90.0, (97, 96)), _node("b", 85.0, (95, 98)), _node("c", 88.0, (5, 2))]
    marked = mark_lagging(nodes)
    assert [n.name for n in marked if n.lagging] == ["c"]
    assert "GPU 4% against a median of 96%" in marked[2].lagging
    # A node without GPUs among nodes with GPUs: CPU against CPU, never GPU against CPU.
    mixed = mark_lagging([_node("a", 50.0, (99,)), _node("b", 45.0), _node("c", 2.0, (99,))])
    assert [n.name for n in mixed if n.lagging] == ["c"]
    assert "CPU 2%" in mixed[2].lagging


def test_top_json_has_exactly_the_documented_shape() -> None:
    answered = NodeSample(
        "node-0",
        0,
        cpu_percent=12.5,
        cpus=8,
        memory_used_bytes=1,
        memory_total_bytes=2,
        load=(0.1, 0.2, 0.3),
        net_rx_bytes_per_s=10.0,
        net_tx_bytes_per_s=20.0,
        gpus=(GpuSample(0, 97.0, 3, 4, 60.0, 300.0),),
        lagging="far below",
    )
    silent = NodeSample("node-1", 1, status=NOT_ANSWERING, error="timed out")
    document = documents.top(Frame("c", 0.0, (answered, silent)))
    assert list(document) == ["nodes"]
    assert document["nodes"][0] == {
        "name": "node-0",
        "cpu_percent": 12.5,
        "memory_used_bytes": 1,
        "memory_total_bytes": 2,
        "net_rx_bytes_per_s": 10.0,
        "net_tx_bytes_per_s": 20.0,
        "gpus": [
            {
                "index": 0,
                "util_percent": 97.0,
                "memory_used_bytes": 3,
                "memory_total_bytes": 4,
                "temperature_c": 60.0,
                "power_w": 300.0,
            }
        ],
    }
    assert document["nodes"][1] == {
        "name": "node-1",
        "cpu_percent": None,
        "memory_used_bytes": None,
        "memory_total_bytes": None,
        "net_rx_bytes_per_s": None,
        "net_tx_bytes_per_s": None,
        "gpus": [],
    }


def test_the_probe_travels_whole_in_the_command() -> None:
    command = probe_command()
    assert command.startswith("python3 -c ") and command.endswith(" 0.5")
    assert "def sample(" in command  # nothing to install on the node first


def test_the_latest_step_line_comes_from_the_head_log(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "node-0.log").write_text("starting\nstep 10 loss 2.1\nstep 20 loss 1.9\nsaving\n")
    record = JobRecord(
        id="j1",
        cluster="c",
        framework="none",
        command="train",
        workdir="~",
        nodes=["node-0", "node-1"],
        port=1,
        started=0.0,
        local_logs=str(logs),
    )
    from dlvm_cluster.inventory import Inventory

    inventory = Inventory("c", (NODE,))
    assert latest_step(record, inventory) == "step 20 loss 1.9"


def test_a_log_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("x" * 1_000_000 + "\n" + "\n".join(f"line {i}" for i in range(100)) + "\n")
    tail = log_tail(log, lines=5, limit=4096)
    assert tail == [f"line {i}" for i in range(95, 100)]
    assert log_tail(tmp_path / "absent.log") == []


def test_the_frame_shows_node_words_as_text_never_as_markup_or_escapes() -> None:
    import io

    from rich.console import Console

    from dlvm_cluster.cli.top_view import render

    said = "[red]x[/red] \x1b]52;c;aGk=\x07"
    nodes = (
        NodeSample("node-0", 0, status=PROBE_FAILED, error=f"exit 1: {said}"),
        NodeSample("node-1", 1, cpu_percent=50.0, gpu_error=f"nvidia-smi: {said}"),
    )
    job = JobLine("j1", "running", 0, f"step 5 {said}")
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(Frame("c", 0.0, nodes, job)))
    shown = out.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown
    assert shown.count("[red]x[/red] \\x1b]52;c;aGk=\\x07") == 3
