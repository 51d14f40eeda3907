"""Pure unit tests: node selectors, remote command text (run by a local sh), fingerprints and
the inventory made from Terraform's outputs. No cluster, no network."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_until
from system import alive

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory, Node, fingerprint, from_terraform_outputs
from dlvm_cluster.remote.command import PID_MARKER, kill_tree, wrap
from dlvm_cluster.shell import env_exports, quote_path

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQe0b1bHqvFXaP0Yb3dXvN7jSRAi3lDRsQFZ3tjv7bC"


def inventory(count: int = 4) -> Inventory:
    nodes = tuple(
        Node(
            name=f"node-{rank}",
            rank=rank,
            ip=f"10.0.0.{rank + 2}",
            port=22,
            user="root",
            host_key=KEY,
        )
        for rank in range(count)
    )
    return Inventory(cluster="demo", nodes=nodes)


# --- Inventory.select


@pytest.mark.parametrize(
    ("selector", "ranks"),
    [
        (None, [0, 1, 2, 3]),
        ("", [0, 1, 2, 3]),
        ("0", [0]),
        ("0,2-3", [0, 2, 3]),
        ("3,1", [1, 3]),
        ("1-1", [1]),
        ("0-3", [0, 1, 2, 3]),
        ("2,2,1-2", [1, 2]),
        (" 0 , 3 ", [0, 3]),
        ("node-2", [2]),
        ("node-3,node-0", [0, 3]),
        ("node-1,2-3", [1, 2, 3]),
    ],
)
def test_select(selector: str | None, ranks: list[int]) -> None:
    chosen = inventory().select(selector)
    assert [node.rank for node in chosen] == ranks
    assert all(isinstance(node, Node) for node in chosen)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("4", "no node of rank 4"),
        ("2-9", "no node of rank 4"),
        ("node-9", "neither a rank"),
        ("a-b", "neither a rank"),
        ("-1", "neither a rank"),
        ("1,", "neither a rank"),
        ("1;2", "neither a rank"),
        ("3-1", "empty range"),
    ],
)
def test_select_refuses_bad_selectors(selector: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        inventory().select(selector)
    assert caught.value.exit_code == 2
    assert caught.value.hint


# --- command text, run by a real local sh

AWKWARD = {
    "SINGLE": "it's",
    "DOUBLE": 'say "hi"',
    "NEWLINES": "line one\nline two\n",
    "DOLLAR": "$HOME and ${PATH} and $(echo no) and `echo no`",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
    "BACKSLASH": "a\\b\\\\c\\n",
    "GLOB": "* ? [a-z]",
    "SEMI": "; exit 3; && || | & > /dev/null",
    "UNICODE": "naïve ☃",
}


def sh(text: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", text], capture_output=True, text=True, timeout=30, env=env, check=False
    )


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_env_exports_round_trip(name: str) -> None:
    result = sh(env_exports(AWKWARD) + f'printf %s "${name}"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == AWKWARD[name]


def test_env_exports_reach_child_processes() -> None:
    names = sorted(AWKWARD)
    script = "import os, sys; sys.stdout.write('\\0'.join(os.environ[n] for n in sys.argv[1:]))"
    python = shutil.which("python3") or shutil.which("python")
    assert python
    result = sh(env_exports(AWKWARD) + f'{python} -c "{script}" ' + " ".join(names))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0") == [AWKWARD[name] for name in names]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("~", "{home}"),
        ("~/work", "{home}/work"),
        ("~/my work/it's", "{home}/my work/it's"),
        ("/tmp/a b", "/tmp/a b"),
        ("$HOME/x", "$HOME/x"),
        ("~other/x", "~other/x"),
        ("rel/`x`", "rel/`x`"),
    ],
)
def test_quote_path(path: str, expected: str, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = sh(f"printf %s {quote_path(path)}", env=env)
    assert result.stdout == expected.format(home=tmp_path)


def test_wrap_reports_pid_exports_env_and_changes_directory(tmp_path: Path) -> None:
    workdir = tmp_path / "my work"
    workdir.mkdir()
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    text = wrap('printf "%s|%s" "$DOLLAR" "$(pwd)"; exit 7', AWKWARD, "~/my work", cluster="c")
    process = subprocess.Popen(
        ["sh", "-c", text], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 7
    assert stdout == f"{AWKWARD['DOLLAR']}|{workdir}"
    assert stderr == f"{PID_MARKER}{process.pid}\n"


def test_wrap_does_not_run_command_when_workdir_is_missing(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = sh(wrap("echo ran", {}, "~/absent", cluster="c"), env=env)
    assert result.returncode != 0
    assert "ran" not in result.stdout


# --- kill_tree on a real local process tree


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.fixture
def process_tree() -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """sh with two sleeps (one in its own session) in a new session; only these are ever killed."""
    root = subprocess.Popen(
        ["sh", "-c", "sleep 300 & setsid sleep 300 & wait"], start_new_session=True
    )
    started = [root.pid]
    try:
        started += wait_until(
            lambda: found if len(found := _children(root.pid)) == 2 else [],
            10,
            interval=0.02,
            message="the test tree did not start",
        )
        yield root, started
    finally:
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        root.wait(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_tree_stops_the_whole_tree(
    process_tree: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    root, started = process_tree
    assert all(alive(pid) for pid in started)
    result = sh(kill_tree(root.pid, grace=1.0))
    assert result.returncode == 0, result.stderr
    assert root.wait(timeout=10) != 0
    wait_until(
        lambda: not any(alive(pid) for pid in started),
        5,
        interval=0.05,
        message=lambda: f"still alive: {[pid for pid in started if alive(pid)]}",
    )


def test_kill_tree_of_a_finished_process_is_harmless() -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    result = sh(kill_tree(done.pid, grace=0.2))
    assert result.returncode == 0


# --- fingerprints and Terraform outputs


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa"])
def test_fingerprint_matches_ssh_keygen(key_type: str, tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "test", "-f", str(key)],
        check=True,
        timeout=30,
    )
    public = (tmp_path / "key.pub").read_text().strip()
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "key.pub")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()[1]
    assert fingerprint(public) == listed
    node = Node(name="node-0", rank=0, ip="10.0.0.2", port=22, user="root", host_key=public)
    assert node.host_key_fingerprint == listed


def test_known_hosts_lines() -> None:
    key_type, blob = KEY.split()
    plain = Node(name="a", rank=0, ip="10.0.0.2", port=22, user="root", host_key=KEY + " c")
    other = Node(name="b", rank=1, ip="10.0.0.3", port=2222, user="root", host_key=KEY)
    assert plain.known_hosts_line() == f"10.0.0.2 {key_type} {blob}"
    assert other.known_hosts_line() == f"[10.0.0.3]:2222 {key_type} {blob}"
    both = Inventory(cluster="demo", nodes=(plain, other)).known_hosts()
    assert both.splitlines() == [plain.known_hosts_line(), other.known_hosts_line()]


def _output(rank: int, **extra: object) -> dict[str, object]:
    return {"rank": rank, "ip": f"10.0.0.{rank + 2}", "host_key": KEY, **extra}


def test_from_terraform_outputs_sorts_by_rank_as_numbers() -> None:
    raw = {f"node-{rank}": _output(rank) for rank in (10, 2, 0, 1, 11, 3, 4, 5, 6, 7, 8, 9)}
    made = from_terraform_outputs("demo", {"nodes": raw}, env={"PATH": "/x"}, gpus_per_node=2)
    assert [node.rank for node in made.nodes] == list(range(12))
    assert [node.name for node in made.nodes][:3] == ["node-0", "node-1", "node-2"]
    assert made.head.name == "node-0"
    assert made.env == {"PATH": "/x"}
    assert made.gpus_per_node == 2
    assert made.nodes[0].port == 22 and made.nodes[0].user == "root"


def test_from_terraform_outputs_reads_strings_and_trims_key_comments() -> None:
    item = {"rank": "0", "ip": "10.0.0.2", "port": "2222", "user": "ubuntu"}
    raw = {"node-0": {**item, "host_key": KEY + " root@x\n"}}
    node = from_terraform_outputs("demo", {"nodes": raw}, env={}, gpus_per_node=0).nodes[0]
    assert (node.rank, node.port, node.user, node.host_key) == (0, 2222, "ubuntu", KEY)


@pytest.mark.parametrize("host_key", [None, ""])
def test_from_terraform_outputs_without_host_key_fails(host_key: str | None) -> None:
    raw = {"node-0": _output(0), "node-1": _output(1, host_key=host_key)}
    with pytest.raises(ProvisionError, match="node-1 reported no SSH host key") as caught:
        from_terraform_outputs("demo", {"nodes": raw}, env={}, gpus_per_node=0)
    assert caught.value.exit_code == 3
    assert caught.value.hint


def test_from_terraform_outputs_without_nodes_output_fails() -> None:
    with pytest.raises(ProvisionError, match="no `nodes` output"):
        from_terraform_outputs("demo", {}, env={}, gpus_per_node=0)


def test_inventory_json_round_trip() -> None:
    original = Inventory(
        cluster="demo", nodes=inventory(3).nodes, env={"PATH": "/bin"}, gpus_per_node=8
    )
    assert Inventory.from_json(original.to_json()) == original


@pytest.mark.parametrize(
    "module", ["remote.fanout", "remote.sync", "remote.pool", "agent.server", "remote.connection"]
)
def test_paramiko_loads_without_invoke_whichever_module_comes_first(module: str) -> None:
    """paramiko imports invoke (half its import time) only for ssh_config `Match exec`, which
    dlvm never reads; remote/connection.py keeps it out, for every module that uses paramiko."""
    code = f"import sys, dlvm_cluster.{module}; print('invoke' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_exec_path_does_without_the_spec_models() -> None:
    """`dlvm exec` on a cluster without secrets reads the applied spec as JSON: loading the
    models (pydantic) would cost it ~0.1 s of every warm command. The launch planners bring
    them in, so the exec path must not import them through the launch package."""
    code = (
        "import sys, dlvm_cluster.cli.fast_path, dlvm_cluster.orchestrate.nodes.commands; "
        "print(sorted(m for m in ('pydantic', 'ruamel') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
