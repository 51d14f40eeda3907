"""`dlvm check` on a real 3-node local cluster: a healthy cluster passes; a node whose link is
throttled with tc inside its namespace is named; a node whose torch does not import is named,
and a job with `check: true` refuses to start on it; node names resolve both ways, so a
torchrun job starts without c10d's hostname warning. And, on the same nodes, the wait for the
GPU network's boot verdicts (cluster/boot.py) over real SSH."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name

from dlvm_cluster.orchestrate.check.run import program_path
from dlvm_cluster.orchestrate.cluster.boot import wait_for_boot
from dlvm_cluster.orchestrate.cluster.records import open_pool, require_inventory
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.gcp.gpu_network import boot_readiness
from dlvm_cluster.state import ClusterState

HOSTNAME_WARNING = "The hostname of the client socket cannot be retrieved"


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = unique_name("ck")
    folder = tmp_path_factory.mktemp("check")
    spec = folder / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 3}\n"
        "env: {OMP_NUM_THREADS: 1, CKPT: /tmp/check/model.pt}\n"
        "files:\n"
        f"  - {{src: {REPO / 'examples' / 'train_ddp.py'}, dst: ~/work}}\n"
        "job:\n"
        "  framework: torchrun\n"
        "  workdir: ~/work\n"
        "  command: train_ddp.py --steps 10\n"
        "  check: true\n"
    )
    cli.run("up", str(spec), check=True)
    try:
        yield name, spec
    finally:
        cli.run("down", name, "--yes")


def _check(cli: Cli, name: str) -> tuple[int, dict[str, dict[str, object]], dict[str, object]]:
    result = cli.run("check", name, "--json", timeout=600)
    assert result.stdout, result.stderr[-3000:]
    data = json.loads(result.stdout)
    return result.returncode, {node["name"]: node for node in data["nodes"]}, data


@contextlib.contextmanager
def _throttled(namespace: str) -> Iterator[None]:
    """The node's sending limited to 20 Mbit/s by a token bucket on its interface."""
    tc = ["ip", "netns", "exec", namespace, "tc", "qdisc"]
    shaper = ["tbf", "rate", "20mbit", "burst", "32kbit", "latency", "400ms"]
    subprocess.run([*tc, "add", "dev", "eth0", "root", *shaper], check=True)
    try:
        yield
    finally:
        subprocess.run([*tc, "del", "dev", "eth0", "root"], check=True)


@contextlib.contextmanager
def _without_torch(cli: Cli, name: str, node: str) -> Iterator[None]:
    """On `node` only (its home is its own), a `torch` module that fails to import, beside
    the check program, where Python looks first."""
    shadow = program_path(name).rsplit("/", 1)[0] + "/torch.py"
    write = (
        f"mkdir -p {shadow.rsplit('/', 1)[0]} && echo 'raise ImportError(\"broken\")' > {shadow}"
    )
    cli.run("exec", name, "--nodes", node, "--", write, check=True)
    try:
        yield
    finally:
        cli.run("exec", name, "--nodes", node, "--", f"rm -f {shadow}", check=True)


def test_healthy_cluster_passes(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    code, nodes, data = _check(cli, name)
    assert code == 0, data
    assert data["ok"] is True and data["backend"] == "gloo"
    assert data["transport"] == "gloo over TCP"
    assert sorted(nodes) == ["node-0", "node-1", "node-2"]
    for node in nodes.values():
        assert node["ok"] is True and node["problems"] == []
        assert node["names"] == "ok" and "torch" in str(node["python"])
        assert float(node["send_gbs"]) > 0 and float(node["receive_gbs"]) > 0  # type: ignore[arg-type]
    assert float(data["bus_gbs"]) > 0  # type: ignore[arg-type]


def test_throttled_node_is_named(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    machines = cli.status(name)["nodes"]
    namespace = str(machines[1]["provider_id"])  # type: ignore[index]
    with _throttled(namespace):
        result = cli.run("check", name, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    named = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert named and all(line.startswith("✗ node-1: ") for line in named), result.stdout
    assert "sends at" in result.stdout and "under half the median" in result.stdout
    assert "1 of 3 node(s) failed" in result.stdout


def test_node_without_torch_is_named_and_a_checked_job_refuses_to_start(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, spec = cluster
    with _without_torch(cli, name, "node-2"):
        code, nodes, data = _check(cli, name)
        assert code == 1 and data["ok"] is False
        assert nodes["node-2"]["ok"] is False
        assert nodes["node-2"]["problems"] == ["torch does not import: ImportError: broken"]
        # the other two still measure their link (whether each is judged fast enough is the
        # throttled test's subject: two links measured on a busy machine may differ widely)
        for other in ("node-0", "node-1"):
            assert nodes[other]["send_gbs"] and nodes[other]["names"] == "ok", data
            assert not any("torch" in str(p) for p in nodes[other]["problems"]), data  # type: ignore[attr-defined]
        assert nodes["node-2"]["send_gbs"] is None
        jobs_before = len(cli.status(name)["jobs"])  # type: ignore[arg-type]
        launch = cli.run("launch", str(spec), timeout=600)
    assert launch.returncode == 1, launch.stdout + launch.stderr[-3000:]
    assert re.search(r"the cluster check failed on [12] of 3 node\(s\)", launch.stderr)
    assert "node-2: torch does not import" in launch.stderr
    assert len(cli.status(name)["jobs"]) == jobs_before  # type: ignore[arg-type]


@pytest.mark.training
def test_names_resolve_both_ways_and_torchrun_starts_quietly(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, spec = cluster
    # every node names every node from its address, as IPv4 and as a listener on [::] sees
    # it (::ffff:IPv4), the form torch's TCPStore looks up
    lookup = 'for ip in $DLVM_NODE_IPS; do getent hosts "$ip" "::ffff:$ip"; done'
    result = cli.run("exec", name, "--", lookup, check=True)
    ips = [str(node["ip"]) for node in cli.status(name)["nodes"]]  # type: ignore[attr-defined]
    for node in ("node-0", "node-1", "node-2"):
        seen = [
            line.split()[1:] for line in result.stdout.splitlines() if line.startswith(f"[{node}]")
        ]
        expected = [
            [form, f"node-{rank}"] for rank, ip in enumerate(ips) for form in (ip, f"::ffff:{ip}")
        ]
        assert seen == expected, result.stdout
    launch = cli.run("launch", str(spec), timeout=600)  # job.check passes first
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "measuring bandwidth between 3 node(s)" in launch.stderr
    assert "done steps=10 world_size=3" in launch.stdout
    assert HOSTNAME_WARNING not in launch.stdout + launch.stderr


def test_the_wait_for_the_gpu_network_reads_every_node_and_falls_back_together(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """Ready before launch over real SSH: the A3 Mega boot script, sent on stdin as `up`
    sends it, answers each node's verdict from a state folder of the node's own; node-1's
    setup failed, so the other two give up their plugin settings (a stand-in ldconfig: the
    host's linker cache is not touched) and every node uses plain NCCL."""
    name, _ = cluster
    state = ClusterState(name, cli.home / "clusters" / name)
    inventory = require_inventory(state)
    readiness = boot_readiness("a3-megagpu-8g")
    assert readiness is not None
    where = (
        'd="$HOME/gpunet"; PATH="$d/bin:$PATH" STATE_DIR="$d/state" BOOT_ID_FILE="$d/boot_id" '
        'DLVM_NCCL_CONF="$d/nccl.conf" LD_SO_CONF_DIR="$d/ld"'
    )
    readiness = dataclasses.replace(
        readiness,
        probe=f"{where} bash -s probe",
        fallback=f"{where} bash -s fallback",
        timeout_s=120,
    )
    mark = "# Written by dlvm's GPU network setup."
    with open_pool(state, inventory) as pool:
        for node in inventory.nodes:
            verdict = "failed load the dmabuf import helper" if node.rank == 1 else "ready tcpxo x"
            kind, text = verdict.split(" ", 1)
            prepare = (
                'd="$HOME/gpunet"; rm -rf "$d"; mkdir -p "$d/state" "$d/ld" "$d/bin" && '
                'echo boot-1 > "$d/boot_id" && cp "$d/boot_id" "$d/state/boot" && '
                f'echo {text!r} > "$d/state/{kind}" && '
                f'printf "%s\\n" {mark!r} NCCL_NET=FasTrak > "$d/nccl.conf" && '
                'echo /var/lib/tcpxo/lib64 > "$d/ld/000_dlvm-nccl-plugin.conf" && '
                'printf \'#!/bin/sh\\nexit 0\\n\' > "$d/bin/ldconfig" && chmod +x "$d/bin/ldconfig"'
            )
            code, _, err = pool.get(node).run(prepare)
            assert code == 0, err
        outcome = wait_for_boot(pool, inventory.nodes, readiness, SilentProgress())
        assert outcome is not None
        assert outcome.transport == readiness.fallback_title
        assert outcome.fell_back == ("node-1 (load the dmabuf import helper)",)
        for node in inventory.nodes:
            code, out, err = pool.get(node).run(
                'd="$HOME/gpunet"; ls "$d/nccl.conf" "$d/ld"/* 2>/dev/null; cat "$d/state/fallback"'
            )
            assert out.splitlines() == [
                "GPUDirect-TCPXO setup failed on node-1 (load the dmabuf import helper)"
            ], (node.name, out, err)
            pool.get(node).run('rm -rf "$HOME/gpunet"')
