"""Launch plans: exact argv and env per framework, and one real torchrun run on loopback."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest
from harness import REPO

from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.plan import (
    LaunchPlan,
    NodeLaunch,
    covering_network,
    procs_per_node,
    python_program,
    python_script,
)
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.spec.model import Framework, Job

EXPORT = 'export DLVM_HOSTFILE="$HOME"/.dlvm/node-files/demo/jobs/j1/hostfile && '
EXAMPLES = REPO / "examples"


def cluster(
    count: int = 3,
    *,
    gpus: int = 0,
    base: str = "10.77.0.",
    user: str = "root",
    port: int = 22,
) -> Inventory:
    nodes = tuple(
        Node(
            name=f"node-{rank}",
            rank=rank,
            ip=f"{base}{rank + 2}",
            port=port,
            user=user,
            host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",
        )
        for rank in range(count)
    )
    return Inventory(cluster="demo", nodes=nodes, env={"PATH": "/opt/venv/bin"}, gpus_per_node=gpus)


def make_plan(inventory: Inventory, port: int = 29500, **job: object) -> LaunchPlan:
    spec = Job.model_validate({"command": "train.py --steps 10", "procs_per_node": 1, **job})
    return plan_launch(spec, inventory, job_id="j1", port=port, spec_env={"WANDB_MODE": "off"})


def argv(launch: NodeLaunch) -> list[str]:
    """The launcher's argv, after the DLVM_HOSTFILE export every command starts with."""
    assert launch.command.startswith(EXPORT)
    return shlex.split(launch.command[len(EXPORT) :])


def common_env(world_size: int, procs: int = 1) -> dict[str, str]:
    return {
        "MASTER_ADDR": "10.77.0.2",
        "MASTER_PORT": "29500",
        "DLVM_JOB_ID": "j1",
        "DLVM_PROCS_PER_NODE": str(procs),
        "DLVM_WORLD_SIZE": str(world_size),
        "PYTHONUNBUFFERED": "1",
    }


# -- shared parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "setting", "expected"), [(0, "auto", 1), (4, "auto", 4), (4, 2, 2)]
)
def test_procs_per_node(gpus: int, setting: int | str, expected: int) -> None:
    job = Job.model_validate({"command": "x.py", "procs_per_node": setting})
    assert procs_per_node(job, cluster(gpus=gpus)) == expected


@pytest.mark.parametrize("gpus", [0, 4])
def test_hostfile_lists_every_node_with_its_slots(gpus: int) -> None:
    plan = make_plan(cluster(gpus=gpus), framework="none", procs_per_node="auto")
    slots = gpus or 1
    assert [(f.path, f.content) for f in plan.files] == [
        (
            "~/.dlvm/node-files/demo/jobs/j1/hostfile",
            f"10.77.0.2 slots={slots}\n10.77.0.3 slots={slots}\n10.77.0.4 slots={slots}\n",
        )
    ]
    assert plan.launches[0].env["DLVM_WORLD_SIZE"] == str(3 * slots)


def test_every_framework_has_a_planner() -> None:
    for framework in get_args(Framework):
        plan = make_plan(cluster(), framework=framework)
        assert plan.job_id == "j1"
        assert plan.launches


def test_command_exports_hostfile_under_the_nodes_home(tmp_path: Path) -> None:
    plan = make_plan(cluster(), framework="none", command='echo "$DLVM_HOSTFILE"')
    out = subprocess.run(
        ["sh", "-c", plan.launches[0].command],
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == f"{tmp_path}/.dlvm/node-files/demo/jobs/j1/hostfile\n"


def test_bad_job_ids_and_ports_are_refused() -> None:
    job = Job(command="x.py")
    with pytest.raises(ValueError):
        plan_launch(job, cluster(), job_id="a b", port=29500)
    with pytest.raises(ValueError):
        plan_launch(job, cluster(), job_id="j1", port=0)


def test_python_script_forms() -> None:
    assert python_script("train.py --lr 1") == python_script("python3 -u train.py --lr 1")
    assert python_script("/opt/venv/bin/python3.11 train.py").text == "train.py"
    assert python_script("python -m pkg.train --x").module
    assert python_script("-m pkg.train --x").text == "pkg.train --x"
    with pytest.raises(UsageError):
        python_script("python -c 'print(1)'")


def test_python_program_forms() -> None:
    assert python_program("train.py --x") == "python3 train.py --x"
    assert python_program("-m pkg") == "python3 -m pkg"
    assert python_program("python train.py") == "python train.py"
    assert python_program("./run.sh") == "./run.sh"


def test_covering_network() -> None:
    assert covering_network(cluster().nodes) == "10.77.0.0/29"
    assert covering_network(cluster(1).nodes) == "10.77.0.2/32"
    assert covering_network(cluster(base="127.0.1.").nodes) is None
    assert covering_network([*cluster().nodes[:1], cluster(base="fd00::").nodes[0]]) is None


# -- torchrun ------------------------------------------------------------------------------


def test_torchrun_static_on_every_node() -> None:
    plan = make_plan(cluster(), framework="torchrun", procs_per_node=2)
    assert [launch.node.rank for launch in plan.launches] == [0, 1, 2]
    for rank, launch in enumerate(plan.launches):
        assert argv(launch) == [
            "torchrun",
            "--nnodes=3",
            f"--node-rank={rank}",
            "--nproc-per-node=2",
            "--master-addr=10.77.0.2",
            "--master-port=29500",
            f"--local-addr=10.77.0.{rank + 2}",
            "train.py",
            "--steps",
            "10",
        ]
        assert launch.env == common_env(6, procs=2)


def test_torchrun_nnodes_n_uses_the_first_n_nodes() -> None:
    plan = make_plan(cluster(), framework="torchrun", nnodes="2")
    assert [launch.node.rank for launch in plan.launches] == [0, 1]
    assert "--nnodes=2" in argv(plan.launches[1])
    assert plan.files[0].content == "10.77.0.2 slots=1\n10.77.0.3 slots=1\n"
    with pytest.raises(UsageError, match="has 3 nodes"):
        make_plan(cluster(), framework="torchrun", nnodes="4")


def test_torchrun_elastic_uses_c10d_and_unshared_store() -> None:
    plan = make_plan(cluster(), framework="torchrun", nnodes="2:4", max_restarts=5)
    for rank, launch in enumerate(plan.launches):
        assert argv(launch) == [
            "torchrun",
            "--nnodes=2:4",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=10.77.0.2:29500",
            "--rdzv-id=j1",
            f"--rdzv-conf=is_host={'true' if rank == 0 else 'false'},last_call_timeout=5",
            "--max-restarts=5",
            f"--local-addr=10.77.0.{rank + 2}",
            "train.py",
            "--steps",
            "10",
        ]
        assert launch.env == {**common_env(3), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def test_torchrun_elastic_range_must_fit_the_cluster() -> None:
    with pytest.raises(UsageError, match="at most 2"):
        make_plan(cluster(), framework="torchrun", nnodes="1:2")
    with pytest.raises(UsageError, match="not a range"):
        make_plan(cluster(), framework="torchrun", nnodes="3:2")
    with pytest.raises(UsageError, match="torchrun and horovod only"):
        make_plan(cluster(), framework="deepspeed", nnodes="1:3")


def test_torchrun_python_prefix_and_module() -> None:
    plan = make_plan(cluster(1), framework="torchrun", command="python3 -m pkg.train --lr 0.1")
    assert argv(plan.launches[0])[-4:] == ["-m", "pkg.train", "--lr", "0.1"]


def test_user_command_stays_shell_text() -> None:
    plan = make_plan(cluster(1), framework="torchrun", command='train.py --run "$RUN_NAME" > log')
    assert plan.launches[0].command.endswith(' train.py --run "$RUN_NAME" > log')


# -- head-only launchers -----------------------------------------------------------------


def test_horovod_runs_on_the_head_only() -> None:
    plan = make_plan(cluster(gpus=4), framework="horovod", procs_per_node="auto")
    (launch,) = plan.launches
    assert launch.node.rank == 0
    assert argv(launch) == [
        "horovodrun",
        "-np",
        "12",
        "-H",
        "10.77.0.2:4,10.77.0.3:4,10.77.0.4:4",
        "--gloo",
        "python3",
        "train.py",
        "--steps",
        "10",
    ]
    assert launch.env == common_env(12, procs=4)


def test_horovod_ssh_port() -> None:
    plan = make_plan(cluster(2, port=2222), framework="horovod")
    assert argv(plan.launches[0])[6:8] == ["--ssh-port", "2222"]
    mixed = Inventory(cluster="demo", nodes=(cluster(2).nodes[0], cluster(2, port=2222).nodes[1]))
    with pytest.raises(UsageError, match="different ports"):
        make_plan(mixed, framework="horovod")


def test_horovod_elastic_discovers_hosts_from_the_hostfile(tmp_path: Path) -> None:
    inventory = cluster(3)
    plan = make_plan(inventory, framework="horovod", procs_per_node=2, nnodes="2:4")
    (launch,) = plan.launches
    words = argv(launch)
    assert words[:9] == [
        "horovodrun",
        "-np",
        "6",
        "--min-np",
        "4",
        "--max-np",
        "8",
        "--host-discovery-script",
        words[8],
    ]
    assert "-H" not in words and words[9] == "--gloo"
    # The discovery command, run by a shell as horovodrun does, prints the job's hostfile
    # (the file every node gets, which `dlvm scale` rewrites) as ip:slots.
    (hostfile,) = plan.files
    assert hostfile.path.startswith("~/")
    written = tmp_path / hostfile.path.removeprefix("~/")
    written.parent.mkdir(parents=True)
    written.write_text(hostfile.content)
    shown = subprocess.run(
        ["sh", "-c", words[8]],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["10.77.0.2:2", "10.77.0.3:2", "10.77.0.4:2"]


def test_mpi_runs_on_the_head_and_forwards_the_environment() -> None:
    plan = make_plan(cluster(), framework="mpi", procs_per_node=2)
    (launch,) = plan.launches
    assert launch.node.rank == 0
    forwarded = [
        "PATH",
        "WANDB_MODE",
        "DLVM_CLUSTER",
        "DLVM_NUM_NODES",
        "DLVM_NODE_IPS",
        "DLVM_HEAD_IP",
        "DLVM_GPUS_PER_NODE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "DLVM_JOB_ID",
        "DLVM_PROCS_PER_NODE",
        "DLVM_WORLD_SIZE",
        "PYTHONUNBUFFERED",
        "DLVM_HOSTFILE",
    ]
    assert argv(launch) == [
        "mpirun",
        "--allow-run-as-root",
        "-np",
        "6",
        "-H",
        "10.77.0.2:2,10.77.0.3:2,10.77.0.4:2",
        "--bind-to",
        "none",
        "--map-by",
        "slot",
        "--mca",
        "btl_tcp_if_include",
        "10.77.0.0/29",
        "--mca",
        "oob_tcp_if_include",
        "10.77.0.0/29",
        *[word for name in forwarded for word in ("-x", name)],
        "python3",
        "train.py",
        "--steps",
        "10",
    ]
    assert launch.env == common_env(6, procs=2)


def test_mpi_as_another_user_on_loopback_with_an_ssh_port() -> None:
    plan = make_plan(cluster(2, base="127.0.1.", user="ml", port=2022), framework="mpi")
    words = argv(plan.launches[0])
    assert "--allow-run-as-root" not in words
    assert not any(word.endswith("_if_include") for word in words)
    assert words[words.index("plm_rsh_args") + 1] == "-p 2022"


# -- per-node launchers ------------------------------------------------------------------


def test_deepspeed_no_ssh_on_every_node() -> None:
    plan = make_plan(cluster(), framework="deepspeed")
    assert len(plan.launches) == 3
    for rank, launch in enumerate(plan.launches):
        assert argv(launch) == [
            "deepspeed",
            "--hostfile",
            "$DLVM_HOSTFILE",
            "--no_ssh",
            f"--node_rank={rank}",
            "--master_addr=10.77.0.2",
            "--master_port=29500",
            "train.py",
            "--steps",
            "10",
        ]
        assert launch.env == common_env(3)
    module = make_plan(cluster(1), framework="deepspeed", command="-m pkg.train")
    assert argv(module.launches[0])[-2:] == ["--module", "pkg.train"]


def test_accelerate_multi_gpu_on_every_node() -> None:
    plan = make_plan(cluster(gpus=2), framework="accelerate", procs_per_node="auto")
    for rank, launch in enumerate(plan.launches):
        assert argv(launch) == [
            "accelerate",
            "launch",
            "--multi_gpu",
            "--num_machines=3",
            "--num_processes=6",
            f"--machine_rank={rank}",
            "--main_process_ip=10.77.0.2",
            "--main_process_port=29500",
            "train.py",
            "--steps",
            "10",
        ]
        assert launch.env == common_env(6, procs=2)


def test_none_runs_the_command_unchanged_on_every_node() -> None:
    plan = make_plan(cluster(), framework="none", command="./run.sh a 'b c'; echo $X")
    assert [launch.command for launch in plan.launches] == [
        EXPORT + "./run.sh a 'b c'; echo $X"
    ] * 3
    assert all(launch.env == common_env(3) for launch in plan.launches)


# -- real training -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.training
def test_torchrun_plan_trains_across_two_loopback_nodes(tmp_path: Path) -> None:
    """2 "nodes" (127.0.1.2 and .3, both reach lo) x 2 processes, started as dlvm would."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(EXAMPLES / "train_ddp.py", workdir)
    inventory = cluster(2, base="127.0.1.")
    job = Job(framework="torchrun", command="train_ddp.py --steps 200", procs_per_node=2)
    plan = plan_launch(job, inventory, job_id="loopback", port=free_port())
    venv_bin = str(Path(sys.executable).parent)
    procs = []
    for launch in plan.launches:
        env = {
            **node_environment(inventory, launch.node, {"CKPT": str(tmp_path / "ckpt.pt")}),
            **launch.env,
            "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "GLOO_SOCKET_IFNAME": "lo",  # gloo would advertise the hostname's address
            "PG_TIMEOUT": "30",
        }
        procs.append(
            subprocess.Popen(
                ["sh", "-c", wrap(launch.command, env, str(workdir), cluster="demo")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group, to stop it all on failure
            )
        )
    deadline = time.monotonic() + 120
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    head = outputs[0]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs)
    assert sorted(re.findall(r"world_size=(\d+) rank=(\d+)", "".join(outputs))) == [
        ("4", str(rank)) for rank in range(4)
    ]
    losses = [float(loss) for loss in re.findall(r"^step \d+ loss ([\d.]+)$", head, re.M)]
    assert len(losses) == 10 and losses[-1] < losses[0] / 2, head
    assert re.search(r"^done steps=200 world_size=4 final_loss=", head, re.M), head
    assert (tmp_path / "ckpt.pt").exists()


def test_the_spec_names_exactly_the_registered_frameworks() -> None:
    """The spec's `Framework` literal (foundation: it cannot import launch) and the registry
    must list the same frameworks: a registered one the spec refused, or a spec name with no
    planner, would fail only when a user names it."""
    from dlvm_cluster.launch.frameworks import FRAMEWORKS
    from dlvm_cluster.spec.model import Framework

    assert set(get_args(Framework)) == set(FRAMEWORKS)
    assert all(name == entry.name for name, entry in FRAMEWORKS.items())


def test_a_framework_with_node_software_brings_its_own_setup() -> None:
    """Horovod's node software is its registry entry's, and its build script is a node
    program of nodeside/."""
    from dlvm_cluster import nodeside
    from dlvm_cluster.launch.frameworks import FRAMEWORKS

    with_setup = {name for name, entry in FRAMEWORKS.items() if entry.node_setup}
    assert with_setup == {"horovod"}
    setup = FRAMEWORKS["horovod"].node_setup
    assert setup is not None and nodeside.path(setup.build_script).is_file()
    assert setup.artifact_line in nodeside.path(setup.build_script).read_text()
