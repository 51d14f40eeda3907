"""Private nodes reached through an IAP tunnel, on a real local cluster.

A GCP cluster with `public_ip: false` records for each node the command that carries SSH to
it (`gcloud compute start-iap-tunnel VM 22 --listen-on-stdin ...`, providers/gcp/identity.py).
Here a local cluster's inventory is rewritten the way the gcp provider writes it: each node's
address becomes one this machine cannot route to (TEST-NET-1), and its proxy is the gcp
provider's own tunnel command. A stand-in `gcloud` on PATH plays IAP: it connects its stdin
and stdout to the real node's sshd, and logs each tunnel it opens. Every command that reaches
nodes therefore works only if it goes through the tunnel: exec, sync both ways, status,
launch, `dlvm ssh`, and plain ssh/scp/rsync with `dlvm ssh-config`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import Cli, unique_name

from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.records import load_inventory, save_inventory
from dlvm_cluster.providers.gcp.identity import iap_tunnel_command
from dlvm_cluster.remote import agent_process
from dlvm_cluster.state import ClusterState

ZONE = "us-central1-a"
PROJECT = "tunnel-proj"
# A stand-in for `gcloud compute start-iap-tunnel INSTANCE 22 --listen-on-stdin`: the
# instance's sshd (from a map file) on stdin/stdout; an instance not in the map fails as
# gcloud does, with its message on stderr.
# (The agent, which also opens tunnels, keeps only the environment it needs: the paths are
# written into the script.)
STAND_IN = """#!{python}
import json, os, socket, sys, threading
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
assert args[:2] == ["compute", "start-iap-tunnel"], args
assert args[3:5] == ["22", "--listen-on-stdin"], args
if os.path.exists({chatty!r}):  # a tunnel that says a lot before it carries anything
    sys.stderr.write("WARNING: consider installing NumPy for IAP throughput\\n" * 4000)
    sys.stderr.flush()
target = json.load(open({targets!r})).get(args[2])
if target is None:
    sys.stderr.write("ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting "
                     "[4033: 'not authorized'].\\n")
    sys.exit(1)
sock = socket.create_connection((target[0], target[1]))
def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while True:
    data = sock.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


@pytest.fixture(scope="module")
def tunnelled(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """(cluster, folder of the stand-in and its files, the tunnel log): a 2-node local
    cluster whose recorded nodes are reachable only through the stand-in tunnel."""
    root = tmp_path_factory.mktemp("tunnel")
    name = unique_name("iap")
    (root / "work").mkdir()
    (root / "work" / "input.txt").write_text("through the tunnel\n")
    spec = root / "cluster.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: 2}}\n"
        "files:\n  - {src: work, dst: ~/work}\n"
        "job: {framework: none, command: 'echo job-ran-on-$(hostname)'}\n"
    )
    cli.run("up", str(spec), check=True)
    try:
        state = ClusterState(name=name, root=cli.home / "clusters" / name)
        agent_process.stop(state.root)  # its connections went the direct way
        real = load_inventory(state)
        assert real is not None
        targets = {}
        nodes = []
        for node in real.nodes:
            instance = f"{name}-{node.name}"
            targets[instance] = [node.ip, node.port]
            unroutable = f"192.0.2.{10 + node.rank}"
            nodes.append(
                replace(node, ip=unroutable, proxy=iap_tunnel_command(instance, ZONE, PROJECT))
            )
        save_inventory(state, Inventory(**{**real.__dict__, "nodes": tuple(nodes)}))
        (root / "map.json").write_text(json.dumps(targets))
        bin_dir = root / "bin"
        bin_dir.mkdir()
        log = root / "tunnels.log"
        stand_in = STAND_IN.format(
            python=sys.executable,
            log=str(log),
            targets=str(root / "map.json"),
            chatty=str(root / "chatty"),
        )
        (bin_dir / "gcloud").write_text(stand_in)
        (bin_dir / "gcloud").chmod(0o755)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
            yield name, root, log
    finally:
        cli.run("down", name, "--yes")


def _tunnels(log: Path) -> list[list[str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines]


def _tunnelled_to(log: Path) -> set[str]:
    return {args[2] for args in _tunnels(log)}


def test_every_command_goes_through_the_tunnel(cli: Cli, tunnelled: tuple[str, Path, Path]) -> None:
    name, root, log = tunnelled
    instances = {f"{name}-node-0", f"{name}-node-1"}
    log.unlink(missing_ok=True)
    result = cli.run("exec", name, "--", "cat ~/work/input.txt", check=True)
    assert result.stdout.count("through the tunnel") == 2
    # Exactly the gcp provider's tunnel, per node.
    assert sorted(_tunnels(log))[0] == [
        "compute",
        "start-iap-tunnel",
        f"{name}-node-0",
        "22",
        "--listen-on-stdin",
        f"--zone={ZONE}",
        f"--project={PROJECT}",
        "--verbosity=warning",
    ]
    assert _tunnelled_to(log) == instances

    (root / "work" / "more.txt").write_text("pushed\n")
    log.unlink()
    cli.run("sync", name, check=True)
    cli.run(
        "sync", name, "--down", "--remote", "~/work", "--local", str(root / "pulled"), check=True
    )
    assert (root / "pulled" / "node-1" / "more.txt").read_text() == "pushed\n"
    assert _tunnelled_to(log) == instances

    log.unlink()
    status = json.loads(cli.run("status", name, "--json", check=True).stdout)
    assert [node["reachable"] for node in status["nodes"]] == [True, True]
    assert _tunnelled_to(log) == instances

    log.unlink()
    launched = cli.run("launch", name, check=False, timeout=300)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert launched.stdout.count("job-ran-on-") == 2
    assert _tunnelled_to(log) == instances


def test_plain_ssh_scp_and_rsync_use_the_tunnel_from_ssh_config(
    cli: Cli, tunnelled: tuple[str, Path, Path]
) -> None:
    name, root, log = tunnelled
    config = root / "ssh_config"
    config.write_text(cli.run("ssh-config", name, check=True).stdout)
    text = config.read_text()
    assert text.count("ProxyCommand gcloud compute start-iap-tunnel") == 2
    assert "HostName 192.0.2.11" in text
    log.unlink(missing_ok=True)
    env = dict(os.environ)
    ssh = ["ssh", "-F", str(config), f"{name}-node-1"]
    done = subprocess.run([*ssh, "cat", "work/input.txt"], env=env, capture_output=True, text=True)
    assert done.stdout == "through the tunnel\n", done.stderr
    copy = root / "copied.txt"
    subprocess.run(
        ["scp", "-F", str(config), f"{name}-node-0:work/input.txt", str(copy)], env=env, check=True
    )
    assert copy.read_text() == "through the tunnel\n"
    if shutil.which("rsync"):
        subprocess.run(
            ["rsync", "-e", f"ssh -F {config}", f"{name}-node-1:work/input.txt", str(copy)],
            env=env,
            check=True,
        )
    assert _tunnelled_to(log) == {f"{name}-node-0", f"{name}-node-1"}
    # `dlvm ssh` (plain ssh underneath) too.
    shell = cli.run("ssh", name, "1", input="cat work/input.txt\nexit\n")
    assert "through the tunnel" in shell.stdout, shell.stderr


def test_a_tunnel_that_fails_says_why_and_a_missing_gcloud_says_what_to_install(
    cli: Cli, tunnelled: tuple[str, Path, Path]
) -> None:
    """Both commands connect anew (DLVM_NO_AGENT=1): no warm connection may answer for the
    tunnel. Stopping the agent is not enough: a cold `exec` that reached a node starts a new
    agent in the background on its way out, which takes its lock (and so becomes visible to
    `stop`) only some time later, with the PATH of the command that started it; an agent of
    the first command, still starting when the second began, carried that one through its
    warm connection with gcloud gone from PATH."""
    name, root, _ = tunnelled
    agent_process.stop(cli.home / "clusters" / name)  # frees the earlier tests' connections
    targets = json.loads((root / "map.json").read_text())
    (root / "map.json").write_text(json.dumps({f"{name}-node-0": targets[f"{name}-node-0"]}))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DLVM_NO_AGENT", "1")
            result = cli.run("exec", name, "--nodes", "1", "--", "true")
        assert result.returncode != 0
        said = result.stdout + result.stderr
        assert "the tunnel ended (exit 1): ERROR: (gcloud.compute.start-iap-tunnel)" in said
        assert "4033: 'not authorized'" in said
    finally:
        (root / "map.json").write_text(json.dumps(targets))
    empty = root / "no-gcloud"
    empty.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(empty))  # dlvm itself runs as sys.executable
        patch.setenv("DLVM_NO_AGENT", "1")
        result = cli.run("exec", name, "--nodes", "0", "--", "true")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "cannot start the tunnel `gcloud`" in said
    assert "install gcloud (the Google Cloud CLI) and put it on PATH" in said


def test_a_tunnel_that_writes_much_to_stderr_still_carries_the_connection(
    cli: Cli, tunnelled: tuple[str, Path, Path]
) -> None:
    """200 kB of warnings before the first byte: more than a pipe holds, so the tunnel would
    stop writing them, and never connect, unless dlvm reads its stderr as it comes."""
    name, root, _ = tunnelled
    agent_process.stop(cli.home / "clusters" / name)
    (root / "chatty").touch()
    try:
        result = cli.run("exec", name, "--", "cat ~/work/input.txt", timeout=120)
    finally:
        (root / "chatty").unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("through the tunnel") == 2
