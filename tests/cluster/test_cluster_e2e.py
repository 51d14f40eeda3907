"""End to end on the local provider: real Terraform, real namespaces, real sshd."""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from pathlib import Path

from harness import Cli, unique_name, write_spec
from system import links, mounts_mentioning, namespaces, processes_mentioning


def _lines_by_node(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        node, _, text = line.partition("] ")
        found[node.lstrip("[")] = text
    return found


def test_exec_sees_ranks_addresses_and_contract_env(cli: Cli, cluster3: tuple[str, Path]) -> None:
    name, _ = cluster3
    result = cli.run(
        "exec",
        name,
        "--",
        'echo "$DLVM_CLUSTER|$DLVM_NODE_RANK|$DLVM_NUM_NODES|$(echo $DLVM_NODE_IPS)|'
        '$DLVM_HEAD_IP|$DLVM_GPUS_PER_NODE|$(hostname)|$(hostname -i)"',
        check=True,
    )
    rows = {node: text.split("|") for node, text in _lines_by_node(result.stdout).items()}
    assert sorted(rows) == ["node-0", "node-1", "node-2"]
    status = cli.status(name)
    ips = [node["ip"] for node in status["nodes"]]  # type: ignore[index]
    assert len(set(ips)) == 3
    for rank in range(3):
        cluster, node_rank, count, all_ips, head, gpus, host, host_ip = rows[f"node-{rank}"]
        assert (cluster, node_rank, count, gpus, host) == (
            name,
            str(rank),
            "3",
            "0",
            f"node-{rank}",
        )
        assert all_ips.split() == ips
        assert head == ips[0]
        # gloo binds to the address the hostname resolves to: it must be the node's own.
        assert host_ip.split()[0] == ips[rank]


def test_tmp_and_home_are_private_per_node(cli: Cli, cluster3: tuple[str, Path]) -> None:
    name, _ = cluster3
    cli.run("exec", name, "--nodes", "1", "--", "echo x > /tmp/mark && echo y > ~/mark", check=True)
    result = cli.run("exec", name, "--", "ls /tmp/mark ~/mark 2>/dev/null | wc -l")
    counts = _lines_by_node(result.stdout)
    assert counts == {"node-0": "0", "node-1": "2", "node-2": "0"}


def test_writes_outside_home_and_tmp_stay_in_the_node(cli: Cli, cluster3: tuple[str, Path]) -> None:
    """A node writes where a VM would (the Python environment it runs, which is the one
    running dlvm here; /usr/local; /var/tmp; /dev/shm) into its own layer: the writing node
    sees it, the others and this machine do not."""
    name, _ = cluster3
    site = Path(sysconfig.get_paths()["purelib"])  # this environment's, the nodes' too
    mark = f"dlvm_node_write_{name.replace('-', '_')}"
    targets = [site / f"{mark}.py", Path(f"/usr/local/{mark}"), Path(f"/var/tmp/{mark}")]
    targets.append(Path(f"/dev/shm/{mark}"))
    try:
        writes = "; ".join(f"echo X=1 > {target}" for target in targets)
        cli.run("exec", name, "--nodes", "1", "--", writes, check=True)
        seen = cli.run("exec", name, "--", f"ls {' '.join(map(str, targets))} 2>/dev/null | wc -l")
        assert _lines_by_node(seen.stdout) == {"node-0": "0", "node-1": "4", "node-2": "0"}
        assert [target for target in targets if target.exists()] == []
        # The node's Python imports the module it wrote; this machine's does not find it.
        imported = cli.run("exec", name, "--nodes", "1", "--", f"python3 -c 'import {mark}'")
        assert imported.returncode == 0, imported.stderr
        assert importlib.util.find_spec(mark) is None
    finally:
        for target in targets:  # only if the defence failed: leave this machine clean
            target.unlink(missing_ok=True)


def test_exec_exit_codes_and_node_selection(cli: Cli, cluster3: tuple[str, Path]) -> None:
    name, _ = cluster3
    result = cli.run("exec", name, "--nodes", "0,2", "--", "exit $DLVM_NODE_RANK")
    assert result.returncode == 1
    assert "node-2: exit 2" in result.stderr
    assert "node-0" not in result.stderr
    ok = cli.run("exec", name, "--nodes", "node-1", "--", "true")
    assert ok.returncode == 0


def test_exec_output_lines_never_mix(cli: Cli, cluster3: tuple[str, Path]) -> None:
    name, _ = cluster3
    result = cli.run(
        "exec", name, "--", "for i in $(seq 200); do echo line-$DLVM_NODE_RANK-$i; done", check=True
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 600
    for line in lines:
        node, _, text = line.partition("] ")
        assert text == f"line-{node[len('[node-') :]}-{text.split('-')[2]}"


def test_re_up_is_a_fast_no_op(cli: Cli, cluster3: tuple[str, Path]) -> None:
    name, spec = cluster3
    before = cli.status(name)
    result = cli.run("up", str(spec), check=True)
    assert "nothing to do" in result.stdout
    assert "terraform" not in result.stderr
    assert cli.status(name) == before


def test_ssh_config_works_with_plain_openssh(
    cli: Cli, cluster3: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = cluster3
    config = tmp_path / "ssh_config"
    config.write_text(cli.run("ssh-config", name, check=True).stdout)
    import subprocess

    out = subprocess.run(
        ["ssh", "-F", str(config), f"{name}-node-2", "hostname"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "node-2"


def test_changed_host_key_is_refused(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("hk")
    spec = write_spec(tmp_path, name, 1)
    cli.run("up", str(spec), check=True)
    try:
        inventory_path = cli.home / "clusters" / name / "inventory.json"
        data = json.loads(inventory_path.read_text())
        # Pin another key, as if the node had been swapped for an impostor.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        other = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        data["nodes"][0]["host_key"] = other
        inventory_path.write_text(json.dumps(data))
        result = cli.run("exec", name, "--", "echo should-not-run")
        assert result.returncode == 1
        assert "HOST KEY CHANGED" in result.stderr
        assert "should-not-run" not in result.stdout
        assert "Traceback" not in result.stderr
    finally:
        cli.run("down", name, "--yes", check=True)


def test_two_clusters_side_by_side_and_down_leaves_nothing(cli: Cli, tmp_path: Path) -> None:
    names = [unique_name("pa"), unique_name("pb")]
    specs = [write_spec(tmp_path, n, 2) for n in names]
    for spec in specs:
        cli.run("up", str(spec), check=True)
    bridges = []
    try:
        ips = []
        for n in names:
            status = cli.status(n)
            ips += [node["ip"] for node in status["nodes"]]  # type: ignore[index]
            tfvars = json.loads(
                (cli.home / "clusters" / n / "terraform" / "terraform.tfvars.json").read_text()
            )
            bridges.append(tfvars["network"]["bridge"])
            bridges.append(tfvars["network"]["veth_prefix"])
            assert len(namespaces(n)) == 2
        assert len(set(ips)) == 4
        for n in names:
            assert cli.run("exec", n, "--", "true").returncode == 0
    finally:
        for n in names:
            cli.run("down", n, "--yes", check=True)
    for n in names:
        assert namespaces(n) == []
        assert processes_mentioning(f"/clusters/{n}/") == []
        assert mounts_mentioning(f"/clusters/{n}/") == []
        assert not (cli.home / "clusters" / n).exists()
    assert links(bridges) == []
    assert processes_mentioning("/run/dlvm/node/sshd_config") == [] or all(
        n not in line for line in processes_mentioning("sshd") for n in names
    )


def test_same_name_under_two_dlvm_homes_do_not_touch_each_other(cli: Cli, tmp_path: Path) -> None:
    """A test run's `demo` must never replace a user's `demo` living under another DLVM_HOME."""
    name = unique_name("tw")
    spec = write_spec(tmp_path, name, 1)
    other = Cli(tmp_path / "other-home")
    cli.run("up", str(spec), check=True)
    try:
        pid_file = cli.home / "clusters" / name / "nodes" / "node-0" / "sshd.pid"
        before = pid_file.read_text()
        other.run("up", str(spec), check=True)
        try:
            assert len(namespaces(name)) == 2
            assert pid_file.read_text() == before
            assert cli.run("exec", name, "--", "true").returncode == 0
            assert other.run("exec", name, "--", "true").returncode == 0
        finally:
            other.run("down", name, "--yes", check=True)
        assert len(namespaces(name)) == 1
        assert cli.run("exec", name, "--", "true").returncode == 0
    finally:
        cli.run("down", name, "--yes", check=True)
    assert namespaces(name) == []
