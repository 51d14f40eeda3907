"""`dlvm check`'s reading of node output and its verdicts: nvidia-smi, the kernel's Xid lines,
the node program's results (hostile ones too), and which node a set of link speeds names.
The nvidia-smi samples are in tests/fixtures/nvidia_smi (README there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dlvm_cluster import nodeside
from dlvm_cluster.cli import documents
from dlvm_cluster.inventory import Node
from dlvm_cluster.nodeside.netcheck import (
    MARKER,
    MAX_NET_LINES,
    log_nccl_init,
    logged_network,
    nccl_net_lines,
    nccl_network,
)
from dlvm_cluster.orchestrate.check.output import (
    LAST_LINES,
    MAX_LINE,
    MAX_LINES,
    SECTION,
    Collected,
    parse_cuda_version,
    parse_gpus,
    parse_xids,
    results,
)
from dlvm_cluster.orchestrate.check.run import (
    CheckReport,
    Measurement,
    NodeCheck,
    probe_command,
    program_path,
)
from dlvm_cluster.orchestrate.check.verdicts import (
    LinkSpeeds,
    judge_gpus,
    judge_names,
    judge_python,
    link_speeds,
    read_facts,
    transport_problems,
    transport_used,
    usual,
)
from dlvm_cluster.providers.base import TransportReading

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia_smi"
PYTHON_OK = MARKER + json.dumps(
    {"kind": "python", "python": "3.11.7", "torch": "2.13.0", "cuda": "12.1", "gpus": 8}
    | {"cuda_available": True}
)


def sample(name: str) -> list[str]:
    return (SAMPLES / name).read_text().splitlines()


def probe_output(gpus: str, *, python: str = PYTHON_OK, xid: str = "") -> list[str]:
    """A node's probe output as the probe command prints it."""
    lines = [f"{SECTION}python", python, f"{SECTION}gpus", *sample(gpus)]
    lines += [f"{SECTION}cuda", sample("banner.txt")[2], f"{SECTION}xid"]
    return lines + (sample(xid) if xid else [])


def test_healthy_h100_node_passes() -> None:
    report = parse_gpus(sample("h100x8_healthy.csv"))
    assert report.problem == ""
    assert len(report.gpus) == 8
    assert {gpu.driver for gpu in report.gpus} == {"535.104.05"}
    assert all(gpu.ecc_uncorrected == 0 and not gpu.remap_pending for gpu in report.gpus)
    facts = read_facts("node-0", probe_output("h100x8_healthy.csv"))
    verdict = judge_gpus(facts, 8, "535.104.05", "12.2")
    assert verdict.problems == ()
    assert verdict.summary == "8 x NVIDIA H100 80GB HBM3, driver 535.104.05, CUDA 12.2"


def test_faulty_gpus_are_each_named() -> None:
    facts = read_facts("node-1", probe_output("h100x8_faulty.csv", xid="dmesg_xid.txt"))
    problems = judge_gpus(facts, 8).problems
    assert "7 GPU(s) visible, 8 expected" in problems
    assert "GPU 3: 2 uncorrected ECC error(s)" in problems
    assert any(p.startswith("GPU 5: rows wait for remapping") for p in problems)
    assert any(p.startswith("GPU 6: row remapping failed") for p in problems)
    xid = [p for p in problems if "Xid" in p]
    assert xid == ["critical Xid error(s) in the kernel log: 79 (PCI:0000:85:00)"]  # not 13


def test_versions_unlike_the_other_nodes_fail() -> None:
    facts = read_facts("node-2", probe_output("h100x8_healthy.csv"))
    problems = judge_gpus(facts, 8, usual_driver="550.54.15", usual_cuda="12.4").problems
    assert "driver 535.104.05, other nodes have 550.54.15" in problems
    assert "CUDA 12.2, other nodes have 12.4" in problems
    assert usual(["550.54.15", "550.54.15", "535.104.05"]) == "550.54.15"
    assert usual(["a", "b"]) == ""  # no majority: nothing to compare with


def test_older_driver_and_broken_nvml() -> None:
    old = parse_gpus(sample("old_driver.csv"))
    assert old.problem == "" and [gpu.ecc_uncorrected for gpu in old.gpus] == [None, 0]
    broken = parse_gpus(sample("nvml_mismatch.txt"))
    assert broken.gpus == ()
    assert broken.problem.startswith("nvidia-smi failed: Failed to initialize NVML")


def test_gpus_expected_but_no_driver_or_no_cuda_torch() -> None:
    lines = [f"{SECTION}python", PYTHON_OK]
    assert "is the driver installed" in judge_gpus(read_facts("n", lines), 8).problems[0]
    assert judge_gpus(read_facts("n", lines), 0).problems == ()
    cpu_torch = MARKER + json.dumps({"kind": "python", "torch": "2.13.0+cpu"})
    facts = read_facts("n", probe_output("h100x8_healthy.csv", python=cpu_torch))
    assert "torch 2.13.0+cpu cannot use the GPUs" in judge_gpus(facts, 8).problems


def test_cuda_version_and_xids() -> None:
    assert parse_cuda_version(sample("banner.txt")) == "12.2"
    assert parse_cuda_version(["CUDA Version                              : 12.4"]) == "12.4"
    xids = parse_xids(sample("dmesg_xid.txt"))
    assert [(xid.code, xid.critical) for xid in xids] == [(13, False), (79, True)]


def test_python_verdicts() -> None:
    assert judge_python(read_facts("n", [f"{SECTION}python", PYTHON_OK])).problems == ()
    missing = read_facts("n", [f"{SECTION}python", "sh: 1: python3: not found"])
    assert judge_python(missing).problems == (
        "python3 does not run the check program: sh: 1: python3: not found",
    )
    no_torch = MARKER + json.dumps({"kind": "python", "python": "3.11", "error": "ImportError"})
    assert judge_python(read_facts("n", [no_torch])).summary == "3.11, no torch"


def _names(**data: object) -> list[str]:
    return [PYTHON_OK, MARKER + json.dumps({"kind": "names", **data})]


def test_name_lookups() -> None:
    good = [{"address": "10.0.0.2", "name": "node-0", "seconds": 0.0}]
    facts = read_facts("n", _names(hostname="node-0", hostname_address="10.0.0.2", lookups=good))
    assert judge_names(facts).problems == ()
    failing = [
        {"address": "::ffff:10.0.0.2", "error": "[Errno -3] Temporary failure", "seconds": 10.0}
    ]
    facts = read_facts("n", _names(hostname="vm", hostname_address="127.0.1.1", lookups=failing))
    loopback, reverse = judge_names(facts).problems
    assert "resolves to 127.0.1.1: gloo would" in loopback
    assert reverse.startswith("reverse lookups fail: ::ffff:10.0.0.2 ([Errno -3]")
    # NCCL does not use the hostname's address: a GPU node is not held to it
    names = _names(hostname="vm", hostname_address="127.0.1.1", lookups=[])
    gpu_node = read_facts("n", [*names, f"{SECTION}gpus", *sample("h100x8_healthy.csv")])
    assert judge_names(gpu_node).problems == ()


def test_the_node_that_sends_slowly_is_named_alone() -> None:
    fast, slow = 1.0, 0.01
    links = {
        ("node-0", "node-1"): fast,
        ("node-1", "node-2"): slow,  # node-1 sends slowly on both its links
        ("node-2", "node-0"): fast,
        ("node-0", "node-2"): fast,
        ("node-2", "node-1"): 0.3,  # its receiving suffers a little (its acks are slow)
        ("node-1", "node-0"): slow,
    }
    speeds = LinkSpeeds(links)
    assert speeds.judge("node-0") == () and speeds.judge("node-2") == ()
    (problem,) = speeds.judge("node-1")
    assert problem.startswith("sends at 0.01 GB/s, under half the median node's 1 GB/s")
    # A node slow both ways: four of six links are slow, the node alone is named.
    both = {**links, ("node-0", "node-1"): slow, ("node-2", "node-1"): slow}
    assert [len(LinkSpeeds(both).judge(n)) for n in ("node-0", "node-1", "node-2")] == [0, 2, 0]


def test_two_nodes_name_both_ends_of_a_slow_link() -> None:
    speeds = LinkSpeeds({("node-0", "node-1"): 1.0, ("node-1", "node-0"): 0.01})
    (sender,) = speeds.judge("node-1")
    (receiver,) = speeds.judge("node-0")
    assert sender.startswith("sends at") and receiver.startswith("receives at")
    assert "cannot tell which end" in sender


def test_a_node_is_slow_only_when_slow_in_both_runs() -> None:
    ordered = tuple(Node(f"node-{i}", i, f"10.0.0.{i + 2}", 22, "root", "") for i in range(3))
    ring = [("node-0", "node-1"), ("node-1", "node-2"), ("node-2", "node-0")]
    back = [(dst, src) for src, dst in ring]

    def run(slow_from: str) -> Measurement:
        links = {link: 0.01 if link[0] == slow_from else 1.0 for link in ring + back}
        return Measurement(ordered=ordered, speeds=LinkSpeeds(links), bus_gbs=0.5)

    assert run("node-1").slow_nodes() == ["node-1"]
    paused_once = run("node-1").best_with(run("none"))  # node-1 was paused, not slow
    assert paused_once.slow_nodes() == [] and paused_once.bus_gbs == 0.5
    assert run("node-1").best_with(run("node-1")).slow_nodes() == ["node-1"]


def _link(shift: object, size: object = 1e9, seconds: object = 1.0) -> dict[str, object]:
    return {"kind": "link", "shift": shift, "bytes": size, "seconds": seconds}


def test_links_are_read_from_receivers_only_and_hostile_values_dropped() -> None:
    ordered = ["node-0", "node-1", "node-2"]
    found = {
        # node-1 claims a link between two other nodes: the sender is always derived from
        # the shift, the receiver is the node that reported it
        "node-1": [{**_link(1), "src": "node-2", "dst": "node-0"}],
        "node-2": [
            _link(True),
            _link(7),
            _link(1, size=-5),
            _link(1, seconds=float("nan")),
            _link(2, seconds=0),
            _link("1"),
        ],
    }
    assert dict(link_speeds(ordered, found).links) == {("node-0", "node-1"): 1.0}
    # the processes of one node (one per GPU) each carry a share of the link
    both = {"node-1": [_link(1), _link(1)]}
    assert dict(link_speeds(ordered, both).links) == {("node-0", "node-1"): 2.0}


def test_results_and_collection_are_bounded() -> None:
    lines = [MARKER + "{not json", MARKER + "[1]", MARKER + '{"no": "kind"}', "x" + MARKER]
    assert results([*lines, MARKER + '{"kind": "ready"}']) == [{"kind": "ready"}]
    collected = Collected()
    for _ in range(MAX_LINES + LAST_LINES + 5):
        collected.add("y" * (MAX_LINE + 10))
    collected.add(MARKER + '{"kind": "link"}')  # a result after the flood is kept
    collected.add("the last line")
    assert len(collected.lines) == MAX_LINES + 1 + LAST_LINES and collected.dropped == 6
    assert {len(line) for line in collected.lines if line.startswith("y")} == {MAX_LINE}
    assert results(collected.lines) == [{"kind": "link"}]
    assert collected.lines[-1] == "the last line"
    long_row = "0, 0:4:0.0, " + "A" * 5000 + ", 1.0, 99999999999999999999999, No, No"
    header = sample("h100x8_healthy.csv")[0]
    (gpu,) = parse_gpus([header, long_row]).gpus
    assert len(gpu.name) <= 64 and gpu.ecc_uncorrected is None


def test_check_document() -> None:
    node = NodeCheck("node-0", 0, "3.11", "none", "ok", 1.0, 1.0, ())
    bad = NodeCheck("node-1", 1, "3.11", "none", "ok", 0.01, 1.0, ("sends at 0.01 GB/s",))
    data = documents.check_report(CheckReport("c", (node, bad), "gloo", 0.5, 1.0))
    assert data["ok"] is False
    assert [(n["name"], n["ok"]) for n in data["nodes"]] == [("node-0", True), ("node-1", False)]
    assert data["nodes"][1]["problems"] == ["sends at 0.01 GB/s"]
    json.dumps(data)


def _fake_tools(folder: Path, *, old_driver: bool) -> Path:
    """nvidia-smi and dmesg that print the samples: the probe's shell part run for real
    without a GPU (an old driver refuses the remapped_rows fields, as such drivers do)."""
    tools = folder / "bin"
    tools.mkdir()
    refuse = "echo 'Field \"remapped_rows.pending\" is not a valid field to query.'; exit 2"
    query = refuse if old_driver else f"cat {SAMPLES / 'h100x8_healthy.csv'}"
    (tools / "nvidia-smi").write_text(
        '#!/bin/sh\ncase "$*" in\n'
        f"  *remapped_rows*) {query} ;;\n"
        f"  *--query-gpu*) cat {SAMPLES / 'old_driver.csv'} ;;\n"
        f"  *) cat {SAMPLES / 'banner.txt'} ;;\nesac\n"
    )
    (tools / "dmesg").write_text(f"#!/bin/sh\ncat {SAMPLES / 'dmesg_xid.txt'}\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return tools


@pytest.mark.torch  # the node program imports torch, as on a node
@pytest.mark.parametrize("old_driver", [False, True])
def test_probe_command_runs_and_reads_back(tmp_path: Path, old_driver: bool) -> None:
    """The probe's shell text as a node runs it: the node program (torch imported, names
    looked up), then nvidia-smi's sections, with the older query when the first is refused."""
    home = tmp_path / "home"
    program = Path(program_path("c").replace("~", str(home)))
    program.parent.mkdir(parents=True)
    program.write_bytes(nodeside.source("netcheck"))
    tools = _fake_tools(tmp_path, old_driver=old_driver)
    env = {
        "HOME": str(home),
        "PATH": f"{tools}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "DLVM_NODE_IPS": "127.0.0.1",
    }
    done = subprocess.run(
        ["sh", "-c", probe_command("c")], env=env, capture_output=True, text=True, timeout=120
    )
    facts = read_facts("node-0", done.stdout.splitlines())
    assert judge_python(facts).problems == (), done.stdout
    assert facts.names and facts.names["lookups"][0]["address"] == "127.0.0.1"
    assert len(facts.gpus.gpus) == (2 if old_driver else 8) and facts.gpus.problem == ""
    assert facts.cuda == "12.2" and [xid.code for xid in facts.xids] == [13, 79]


# -- the transport NCCL used -------------------------------------------------------------

NCCL_SOCKET_LOG = """\
node-0:2210:2210 [0] NCCL INFO Bootstrap : Using enp0s12:10.64.0.2<0>
node-0:2210:2210 [0] NCCL INFO NET/Plugin: Could not find: libnccl-net.so
node-0:2210:2210 [0] NCCL INFO NET/IB : No device found.
node-0:2210:2210 [0] NCCL INFO NET/Socket : Using [0]enp0s12:10.64.0.2<0>
node-0:2210:2210 [0] NCCL INFO Using network Socket
node-0:2210:2210 [0] NCCL INFO comm 0x55d0 rank 0 nranks 16 cudaDev 0 busId 4000 - Init START
"""


NET_SOCKET = "NET/Socket : Using [0]enp0s12:10.64.0.2<0>"

# A p5.48xlarge rank's NCCL log with aws-ofi-nccl 1.14 (its lines are NCCL's "NCCL INFO" and
# the plugin's "NET/OFI " prefix, as its logging macros write them).
NCCL_EFA_LOG = """p5-0:3120:3120 [0] NCCL INFO NET/Plugin: Loaded net plugin Libfabric (v9)
p5-0:3120:3120 [0] NCCL INFO NET/OFI Initializing aws-ofi-nccl 1.14.2
p5-0:3120:3120 [0] NCCL INFO NET/OFI Using Libfabric version 2.1
p5-0:3120:3120 [0] NCCL INFO NET/OFI Using CUDA driver version 12080 with runtime 12080
p5-0:3120:3120 [0] NCCL INFO NET/OFI Plugin selected platform: AWS
p5-0:3120:3120 [0] NCCL INFO NET/OFI Selected provider is efa, fabric is efa-direct (found 32 nics)
p5-0:3120:3120 [0] NCCL INFO NET/OFI Using transport protocol RDMA (platform set)
p5-0:3120:3120 [0] NCCL INFO Using network Libfabric
p5-0:3120:3120 [0] NCCL INFO NET/OFI Selected provider is efa, fabric is efa-direct (found 32 nics)
"""


def test_nccl_and_its_plugins_net_lines_are_sent_each_once_and_bounded() -> None:
    network, lines = (
        nccl_network(NCCL_EFA_LOG.splitlines()),
        nccl_net_lines(NCCL_EFA_LOG.splitlines()),
    )
    assert network == "Libfabric"
    assert lines[0] == "NET/Plugin: Loaded net plugin Libfabric (v9)"
    assert (
        lines.count("NET/OFI Selected provider is efa, fabric is efa-direct (found 32 nics)") == 1
    )
    assert "Using network Libfabric" not in lines
    flood = [f"x NCCL INFO NET/OFI line {i} " + "y" * 500 + "\x1b[2J" for i in range(100)]
    sent = nccl_net_lines(flood)
    assert len(sent) == MAX_NET_LINES and all(len(line) <= 204 for line in sent)
    assert not any("\x1b" in line for line in sent)


@pytest.mark.parametrize(
    ("log", "network"),
    [
        (NCCL_SOCKET_LOG, "Socket"),
        (
            "a3:17:17 [3] NCCL INFO NET/Plugin: Loaded net plugin GPUDirectTCPX (v7)\n"
            "a3:17:17 [3] NCCL INFO Using network GPUDirectTCPX\n",
            "GPUDirectTCPX",
        ),
        ("w-0:21:21 [0] NCCL INFO Using network AWS Libfabric\n", "AWS Libfabric"),
        ("a4:9:9 [0] NCCL INFO Using network gIB\n", "gIB"),
        ("NCCL INFO NET/IB : No device found.\n", ""),
        ("NCCL INFO Using network ;rm -rf /\n", ""),
    ],
)
def test_the_network_nccl_chose_is_read_from_its_log(log: str, network: str) -> None:
    assert nccl_network(log.splitlines()) == network


def test_check_reports_the_transport_and_a_mix_of_them() -> None:
    def said(*networks: object) -> list[dict[str, object]]:
        return [{"kind": "transport", "network": network} for network in networks]

    assert transport_used("gloo", {}) == "gloo over TCP"
    assert transport_used("", {}) == ""
    one = {"node-0": said("Socket", "Socket"), "node-1": said("Socket")}
    assert transport_used("nccl", one) == "NCCL over Socket"
    mixed = {"node-0": said("GPUDirectTCPX"), "node-1": said("Socket")}
    assert transport_used("nccl", mixed) == (
        "NCCL over mixed networks: node-0 GPUDirectTCPX; node-1 Socket"
    )
    # What a node says is its own: only names of the known form count.
    hostile = {"node-0": said("\x1b[2J", 7, "x" * 60, None), "node-1": said("FasTrak")}
    assert transport_used("nccl", hostile) == "NCCL over FasTrak"
    assert transport_used("nccl", {"node-0": said()}) == "NCCL, network not reported"
    data = documents.check_report(
        CheckReport("c", (), "nccl", 10.0, 5.0, transport="NCCL over Socket")
    )
    assert data["transport"] == "NCCL over Socket"


SELECTED = "NET/OFI Selected provider is {provider}, fabric is {fabric} (found {nics} nics)"


def efa_said(network: str = "Libfabric", provider: str = "efa", nics: int = 32) -> dict[str, Any]:
    """What a rank's bandwidth program sends of its transport on an EFA node."""
    selected = SELECTED.format(provider=provider, fabric=f"{provider}-direct", nics=nics)
    return {
        "kind": "transport",
        "network": network,
        "net": ["NET/OFI Using Libfabric version 2.1", selected],
    }


def test_check_reports_efa_with_its_provider_and_nics_and_fails_a_node_that_left_it_unused() -> (
    None
):
    """On an aws cluster of an EFA type, the provider reads what aws-ofi-nccl logged: the
    transport names the libfabric provider and the NICs, and a node whose NCCL ran over
    sockets, another libfabric provider or fewer NICs than the type has fails."""
    from dlvm_cluster.providers.aws.gpu_network import read_transport

    def read(network: str, lines: Sequence[str]) -> TransportReading:
        return read_transport("p5.48xlarge", network, lines)

    good = {"node-0": [efa_said()], "node-1": [efa_said(), efa_said()]}
    assert transport_used("nccl", good, read) == "NCCL over Libfabric (efa (efa-direct), 32 NICs)"
    assert transport_problems(good, read) == {}
    bad = {
        "node-0": [efa_said()],
        "node-1": [{"kind": "transport", "network": "Socket", "net": [NET_SOCKET]}],
        "node-2": [efa_said(provider="tcp")],
        "node-3": [efa_said(nics=16)],
    }
    problems = transport_problems(bad, read)
    assert sorted(problems) == ["node-1", "node-2", "node-3"]
    assert problems["node-1"] == [
        "NCCL used Socket, not EFA: p5.48xlarge's 32 EFA interfaces carried nothing (is the "
        "aws-ofi-nccl plugin on the library path? the Deep Learning AMIs have it)"
    ]
    assert problems["node-2"][0].startswith("libfabric chose its tcp provider, not efa")
    assert problems["node-3"][0].startswith("aws-ofi-nccl found 16 EFA NICs of p5.48xlarge's 32")
    assert transport_used("nccl", bad, read).startswith("NCCL over mixed networks: node-0 ")
    # The plugin's line before 1.14, and types without EFA: detail only, nothing to fail.
    old = ["NET/OFI Selected Provider is efa (found 4 nics)"]
    assert read_transport("p4d.24xlarge", "AWS Libfabric", old) == TransportReading("efa, 4 NICs")
    assert read_transport("g6.xlarge", "Socket", []) == TransportReading()
    # What a node sends is its own: a line of another shape is no reading.
    forged = efa_said()
    forged["net"] = ["NET/OFI Selected provider is efa\x1b[2J, fabric is x (found 32 nics)", 7]
    assert read("Libfabric", forged["net"][:1]).detail == ""


def test_nccl_logs_to_a_folder_of_the_process_which_is_read_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE"):
        monkeypatch.delenv(name, raising=False)
    folder = log_nccl_init()
    pattern = os.environ["NCCL_DEBUG_FILE"]
    assert os.environ["NCCL_DEBUG"] == "INFO" and pattern.startswith(str(folder))
    # NCCL replaces %p with the process id.
    Path(pattern.replace("%p", "2210")).write_text(NCCL_SOCKET_LOG)
    plugin, none = "NET/Plugin: Could not find: libnccl-net.so", "NET/IB : No device found."
    assert logged_network(folder) == ("Socket", [plugin, none, NET_SOCKET])
    assert not folder.exists()


def test_a_result_line_nested_past_the_parser_is_output_not_a_crash() -> None:
    """A line of 1,990 `[` after the marker (what a node's shell rc can print before the
    probe) made json.loads raise RecursionError, which ended `dlvm check`."""
    from dlvm_cluster.nodeside.netcheck import MARKER
    from dlvm_cluster.orchestrate.check.output import results

    good = MARKER + '{"kind": "torch", "ok": true}'
    lines = [MARKER + "[" * 1990, MARKER + '{"kind": ' * 1000, MARKER + '{"kind": NaN}', good]
    assert results(lines) == [{"kind": "torch", "ok": True}]


def test_the_providers_reading_fails_the_node_in_the_checks_verdict() -> None:
    """run_check hands the cluster's provider's reading to each measurement: its problem is
    one of the node's problems, its detail part of the transport."""
    from dlvm_cluster.orchestrate.check.run import _judge, _Run
    from dlvm_cluster.orchestrate.check.verdicts import Verdict, read_facts

    nodes = tuple(Node(f"node-{i}", i, f"10.0.0.{i + 2}", 22, "root", "") for i in range(2))
    run = _Run()
    for each, network in zip(nodes, ("Libfabric", "Socket"), strict=True):
        said = efa_said(network)
        for item in (
            {"kind": "link", "shift": 1, "bytes": 1 << 24, "seconds": 0.01},
            {"kind": "allreduce", "backend": "nccl", "bytes": 1 << 24, "seconds": 0.01, "world": 2},
            said,
        ):
            run.sink(each, "stdout", MARKER + json.dumps(item))

    def read(network: str, lines: Sequence[str]) -> TransportReading:
        return TransportReading("efa", "" if network == "Libfabric" else "EFA left unused")

    measured = Measurement.of(run, nodes, read)
    assert measured.network_problems == {"node-1": ["EFA left unused"]}
    assert (
        measured.transport
        == "NCCL over mixed networks: node-0 Libfabric (efa); node-1 Socket (efa)"
    )
    probe = [MARKER + json.dumps({"kind": "python", "python": "3.11.2", "torch": "2.13.0"})]
    facts = {n.name: read_facts(n.name, probe) for n in nodes}
    checks = _judge(nodes, facts, {n.name: Verdict("no GPUs") for n in nodes}, measured)
    assert "EFA left unused" in checks[1].problems
    assert "EFA left unused" not in checks[0].problems
