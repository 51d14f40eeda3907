"""What `dlvm check` concludes from what the nodes said: per node, a verdict on its Python and
torch, its GPUs, its name lookups, and its links. Pure functions of values (the parsed probe
output and bandwidth results, see check_output.py); check.py runs the nodes and gathers."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dlvm_cluster.orchestrate.check.output import (
    GpuReport,
    Xid,
    first,
    number,
    parse_cuda_version,
    parse_gpus,
    parse_xids,
    results,
    sections,
    short,
)
from dlvm_cluster.providers.base import TransportReading

SLOW_FRACTION = 0.5  # a node under this fraction of the median node is slow
SLOW_LOOKUP_S = 1.0  # a name lookup slower than this waits on a resolver
GB = 1e9


@dataclass(frozen=True)
class NodeFacts:
    """What one node's probe said."""

    name: str
    python: Mapping[str, Any] | None  # the program's python result; None: it did not run
    python_output: tuple[str, ...]  # its other lines (an error, a traceback)
    names: Mapping[str, Any] | None
    nvidia_smi: bool
    gpus: GpuReport
    cuda: str
    xids: tuple[Xid, ...]
    error: str = ""  # the node could not be reached or the probe did not finish

    @property
    def torch_works(self) -> bool:
        return bool(self.python) and not (self.python or {}).get("error") and not self.error


def read_facts(name: str, lines: Sequence[str], error: str = "") -> NodeFacts:
    found = results(lines)
    parts = sections(lines)
    gpu_lines = parts.get("gpus")
    return NodeFacts(
        name=name,
        python=first(found, "python"),
        python_output=tuple(parts.get("python", [])[-8:]),
        names=first(found, "names"),
        nvidia_smi=gpu_lines is not None,
        gpus=parse_gpus(gpu_lines) if gpu_lines is not None else GpuReport((), ""),
        cuda=parse_cuda_version(parts.get("cuda", [])),
        xids=parse_xids(parts.get("xid", [])),
        error=error,
    )


@dataclass(frozen=True)
class Verdict:
    """One check on one node: what it found, and what is wrong ("" when nothing)."""

    summary: str
    problems: tuple[str, ...] = ()


def judge_python(facts: NodeFacts) -> Verdict:
    if facts.error:
        return Verdict("not checked", (facts.error,))
    if facts.python is None:
        said = "; ".join(short(line) for line in facts.python_output[-3:]) or "no output"
        return Verdict("broken", (f"python3 does not run the check program: {said}",))
    version = short(str(facts.python.get("python", "?")), 16)
    if facts.python.get("error"):
        error = short(str(facts.python["error"]))
        return Verdict(f"{version}, no torch", (f"torch does not import: {error}",))
    return Verdict(f"{version}, torch {short(str(facts.python.get('torch', '?')), 32)}")


def judge_gpus(
    facts: NodeFacts, expected: int, usual_driver: str = "", usual_cuda: str = ""
) -> Verdict:
    """GPU count against what the cluster was made with; health; versions against the
    versions most nodes have (`usual_*`: "" when there is no majority to compare with)."""
    if facts.error:
        return Verdict("not checked")
    if not facts.nvidia_smi:
        if expected:
            return Verdict(
                "none", (f"no nvidia-smi, {expected} GPU(s) expected: is the driver installed?",)
            )
        return Verdict("none")
    report = facts.gpus
    problems = [report.problem] if report.problem else []
    drivers = sorted({gpu.driver for gpu in report.gpus})
    driver = ",".join(drivers)
    if expected and len(report.gpus) != expected:
        problems.append(f"{len(report.gpus)} GPU(s) visible, {expected} expected")
    for gpu in report.gpus:
        if gpu.ecc_uncorrected:
            problems.append(f"GPU {gpu.index}: {gpu.ecc_uncorrected} uncorrected ECC error(s)")
        if gpu.remap_failure:
            problems.append(f"GPU {gpu.index}: row remapping failed: the GPU needs replacing")
        elif gpu.remap_pending:
            problems.append(f"GPU {gpu.index}: rows wait for remapping: reset the GPU or reboot")
    critical = sorted({f"{xid.code} ({xid.device})" for xid in facts.xids if xid.critical})
    if critical:
        problems.append("critical Xid error(s) in the kernel log: " + ", ".join(critical))
    if usual_driver and driver and driver != usual_driver:
        problems.append(f"driver {driver}, other nodes have {usual_driver}")
    if usual_cuda and facts.cuda and facts.cuda != usual_cuda:
        problems.append(f"CUDA {facts.cuda}, other nodes have {usual_cuda}")
    python = facts.python or {}
    if report.gpus and python.get("torch") and not python.get("cuda_available"):
        problems.append(f"torch {short(str(python['torch']), 32)} cannot use the GPUs")
    names = sorted({gpu.name for gpu in report.gpus})
    summary = f"{len(report.gpus)} x {', '.join(names) or '?'}"
    if driver:
        summary += f", driver {driver}"
    if facts.cuda:
        summary += f", CUDA {facts.cuda}"
    return Verdict(summary, tuple(problems))


def usual(values: Sequence[str]) -> str:
    """The value most nodes share, when more than half do ("" otherwise)."""
    present = [value for value in values if value]
    if not present:
        return ""
    value, count = Counter(present).most_common(1)[0]
    return value if count * 2 > len(present) else ""


def judge_names(facts: NodeFacts) -> Verdict:
    """Its hostname resolves to an address peers can reach (where gloo carries the job), and
    every node's address (as IPv4 and as ::ffff:IPv4) resolves back at once, as torch's
    c10d asks."""
    if facts.error or facts.python is None:
        return Verdict("not checked")
    names = facts.names or {}
    problems = []
    hostname = short(str(names.get("hostname", "?")), 64)
    address = str(names.get("hostname_address", ""))
    if names.get("hostname_error"):
        problems.append(f"its hostname {hostname} does not resolve")
    elif (address.startswith("127.") or address == "::1") and not facts.nvidia_smi:
        # gloo (torch on CPU) gives its peers the address the hostname resolves to; NCCL
        # picks an interface instead, so GPU nodes are not held to this
        problems.append(
            f"its hostname {hostname} resolves to {short(address, 40)}: gloo would give its "
            "peers a loopback address (map the hostname to the node's IP in /etc/hosts, or "
            "set GLOO_SOCKET_IFNAME)"
        )
    lookups = names.get("lookups")
    failed, slow = [], []
    for lookup in lookups if isinstance(lookups, list) else []:
        if not isinstance(lookup, dict):
            continue
        where = short(str(lookup.get("address", "?")), 48)
        seconds = number(lookup.get("seconds"))
        if lookup.get("error"):
            failed.append(f"{where} ({short(str(lookup['error']), 60)})")
        elif seconds is not None and seconds > SLOW_LOOKUP_S:
            slow.append(f"{where} ({seconds:.1f}s)")
    if failed:
        problems.append(
            "reverse lookups fail: " + ", ".join(failed[:4]) + ": torch's c10d warns and waits "
            "on the resolver at every start; give every node's address, and its ::ffff: form, "
            "a name in /etc/hosts, or fix the resolver"
        )
    if slow:
        problems.append("slow reverse lookups: " + ", ".join(slow[:4]))
    return Verdict("ok" if not problems else "failing", tuple(problems))


@dataclass(frozen=True)
class LinkSpeeds:
    """Measured links (sender, receiver) -> GB/s, and what they say of each node.

    A node's sending speed is its best outgoing link, its receiving speed its best incoming
    one: low only when every link from (or to) it is slow, which a slow peer alone cannot
    cause. Each is compared with the median of all nodes' (a median over links would sink
    when one node's links are most of them: 4 of 6 with three nodes)."""

    links: Mapping[tuple[str, str], float]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(end for link in sorted(self.links) for end in link))

    def sending(self, node: str) -> float | None:
        speeds = [speed for (src, _), speed in self.links.items() if src == node]
        return max(speeds) if speeds else None

    def receiving(self, node: str) -> float | None:
        speeds = [speed for (_, dst), speed in self.links.items() if dst == node]
        return max(speeds) if speeds else None

    def _median(self, way: Callable[[str], float | None]) -> float | None:
        values = [value for node in self.nodes if (value := way(node)) is not None]
        return statistics.median(values) if values else None

    @property
    def median(self) -> float | None:
        """The median node speed (the lesser of its sending and receiving), for display."""
        values = [
            min(send, receive)
            for node in self.nodes
            if (send := self.sending(node)) is not None
            and (receive := self.receiving(node)) is not None
        ]
        return statistics.median(values) if values else None

    def judge(self, node: str) -> tuple[str, ...]:
        problems = []
        two = len(self.nodes) == 2
        for way, speeds, cause in (
            ("sends", self.sending, "its NIC, its link, or a traffic shaper on it"),
            ("receives", self.receiving, "its NIC, its link, or a shaper on its input"),
        ):
            speed, median = speeds(node), self._median(speeds)
            if speed is None or not median or speed >= SLOW_FRACTION * median:
                continue
            problem = (
                f"{way} at {speed:.3g} GB/s, under half the median node's {median:.3g} GB/s: "
                f"{cause}"
            )
            if two:
                problem += " (with two nodes the check cannot tell which end is slow)"
            problems.append(problem)
        return tuple(problems)


def link_speeds(
    ordered: Sequence[str], found: Mapping[str, Sequence[Mapping[str, Any]]]
) -> LinkSpeeds:
    """Each receiver's link results -> link speeds. A node reports only links into itself:
    the sender is the node `shift` places back in `ordered` (the order torchrun ranked
    them), whatever else its output claims. Several processes of a node (one per GPU) each
    carry their share of the link: their speeds add up."""
    links: dict[tuple[str, str], float] = {}
    count = len(ordered)
    for index, name in enumerate(ordered):
        for item in found.get(name, ()):
            if item.get("kind") != "link":
                continue
            shift, size, seconds = item.get("shift"), number(item.get("bytes")), None
            seconds = number(item.get("seconds"))
            if not isinstance(shift, int) or isinstance(shift, bool) or not 0 < shift < count:
                continue
            if not size or not seconds:
                continue
            link = (ordered[(index - shift) % count], name)
            links[link] = links.get(link, 0.0) + size / seconds / GB
    return LinkSpeeds(links)


def bus_bandwidth(found: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, float | None]:
    """The all_reduce's backend and bus bandwidth (GB/s, as nccl-tests counts it), from the
    median of the processes' timings."""
    timings, backend = [], ""
    for items in found.values():
        for item in items:
            if item.get("kind") != "allreduce":
                continue
            size, seconds, world = (number(item.get(k)) for k in ("bytes", "seconds", "world"))
            if size and seconds and world and world >= 2:
                timings.append(size / seconds * 2 * (world - 1) / world / GB)
                backend = backend or ("nccl" if item.get("backend") == "nccl" else "gloo")
    return backend, statistics.median(timings) if timings else None


# What a node may say of NCCL's network: a name of NCCL's, a plugin's or its own.
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/-]{0,47}")
MAX_NET_LINES, MAX_NET_LINE = 24, 220  # of the NET/ lines a node sends, what is read
# What the provider of the machines reads from a node's network and NET/ lines.
TransportReader = Callable[[str, Sequence[str]], TransportReading]


def _no_reading(network: str, net_lines: Sequence[str]) -> TransportReading:
    return TransportReading()


def _said_networks(
    found: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Per node, each process's network name (of the known form) and its NET/ lines."""
    per_node: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for node, items in found.items():
        for item in items:
            network = item.get("network") if item.get("kind") == "transport" else None
            if not (isinstance(network, str) and _NETWORK_NAME.fullmatch(network)):
                continue
            said = item.get("net")
            lines = said[:MAX_NET_LINES] if isinstance(said, list) else []
            kept = tuple(line[:MAX_NET_LINE] for line in lines if isinstance(line, str))
            per_node.setdefault(node, []).append((network, kept))
    return per_node


def transport_used(
    backend: str,
    found: Mapping[str, Sequence[Mapping[str, Any]]],
    read: TransportReader = _no_reading,
) -> str:
    """The network transport the bandwidth test ran on: gloo's TCP, or the network NCCL
    chose on the nodes with what the provider reads of it (`read`: "Libfabric (efa, 32
    NICs)"); each node's when the nodes disagree, which a job would not survive."""
    if backend == "gloo":
        return "gloo over TCP"
    if backend != "nccl":
        return ""
    per_node: dict[str, set[str]] = {}
    for node, said in _said_networks(found).items():
        for network, lines in said:
            detail = read(network, lines).detail
            per_node.setdefault(node, set()).add(f"{network} ({detail})" if detail else network)
    names = sorted({name for networks in per_node.values() for name in networks})
    if not names:
        return "NCCL, network not reported"
    if len(names) == 1:
        return f"NCCL over {names[0]}"
    return "NCCL over mixed networks: " + "; ".join(
        f"{node} {', '.join(sorted(networks))}" for node, networks in sorted(per_node.items())
    )


def transport_problems(
    found: Mapping[str, Sequence[Mapping[str, Any]]], read: TransportReader
) -> dict[str, list[str]]:
    """Per node, what the provider finds wrong with the network NCCL used there (its GPU
    network left unused), each once."""
    problems: dict[str, list[str]] = {}
    for node, said in _said_networks(found).items():
        for network, lines in said:
            problem = read(network, lines).problem
            if problem and problem not in problems.get(node, []):
                problems.setdefault(node, []).append(problem)
    return problems
