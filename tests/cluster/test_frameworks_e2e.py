"""The other launchers, for real, on a real local cluster: MPI (mpirun from the head),
Accelerate and DeepSpeed (their launcher on every node) each run a job across the nodes;
every test asserts the world size the job saw, exit 0, and that none of its processes is
left on any node.

Horovod runs in test_horovod_e2e.py, on a cluster of its own whose nodes lack it at first.

What these need (examples/install.sh --dev installs it): Open MPI and pyproject's
`frameworks` group (mpi4py, accelerate, deepspeed) in the environment that runs dlvm, whose
bin dir the local provider puts first on every node's PATH; for DeepSpeed also g++ (see
build_deepspeed_op).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name, wait_until
from system import namespace_processes

pytestmark = pytest.mark.training

NODES = 2
EXAMPLES = ("mpi_hello.py", "train_accelerate.py", "train_deepspeed.py")

EXTENSIONS = Path("/var/tmp/dlvm-tests-torch-extensions")
"""TORCH_EXTENSIONS_DIR for the host and every node: outside the nodes' private /tmp and
copy-on-write home, so the op DeepSpeed compiles on CPU is built once, not once per node,
and kept for later runs on this machine."""

STALE_LOCK_S = 1800
"""A build lock this old was left by a killed build: torch would wait on it forever."""

_BUILD_OP = """
from deepspeed.accelerator import get_accelerator
builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
if builder is not None:
    builder.load()
"""


def _require_frameworks() -> None:
    missing = [m for m in ("mpi4py", "accelerate", "deepspeed") if not importlib.util.find_spec(m)]
    if shutil.which("mpirun") is None:
        missing.append("mpirun (Open MPI)")
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; run examples/install.sh --dev")


def _spec(folder: Path, name: str, job: str) -> Path:
    path = folder / f"{name}-{abs(hash(job)) % 10**8}.yaml"
    files = "".join(f"  - {{src: {REPO / 'examples' / f}, dst: ~/work}}\n" for f in EXAMPLES)
    path.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        f"nodes: {{count: {NODES}}}\n"
        f"env: {{OMP_NUM_THREADS: 1, TORCH_EXTENSIONS_DIR: {EXTENSIONS}}}\n"
        f"files:\n{files}"
        f"job:\n  workdir: ~/work\n  {job}\n"
    )
    return path


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    _require_frameworks()
    name = unique_name("fw")
    folder = tmp_path_factory.mktemp("frameworks")
    cli.run("up", str(_spec(folder, name, "framework: none\n  command: hostname")), check=True)
    try:
        yield name, folder
    finally:
        cli.run("down", name, "--yes")


# torchrun's agents meet at an exit barrier hosted by the head's agent once their workers are
# done; when the head's agent leaves first, another agent logs the closed connection with a
# traceback (torch's own race, harmless: the job has succeeded by then).
EXIT_BARRIER_LOG = "torch/distributed/elastic/agent/server/api.py"


def _without_exit_barrier_log(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if EXIT_BARRIER_LOG not in line)


def _launch(cli: Cli, cluster: tuple[str, Path], job: str, timeout: float) -> str:
    """Launch `job` in the foreground; assert it succeeded and left no process on any node;
    returns its output."""
    name, folder = cluster
    before = namespace_processes(name)  # each node's init and sshd
    result = cli.run("launch", str(_spec(folder, name, job)), timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in _without_exit_barrier_log(result.stdout + result.stderr)
    assert cli.status(name)["jobs"][-1]["state"] == "succeeded"  # type: ignore[index]

    def left() -> dict[int, str]:
        return {pid: args for pid, args in namespace_processes(name).items() if pid not in before}

    wait_until(  # the SSH sessions of dlvm and mpirun close meanwhile
        lambda: left() == {},
        15,
        interval=0.2,
        message=lambda: f"processes left on the nodes: {left()}",
    )
    return result.stdout


def _losses(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"\[node-0\] step \d+ loss ([0-9.e+-]+)", output)]


def test_mpi_hello_allreduce_across_nodes(cli: Cli, cluster: tuple[str, Path]) -> None:
    job = "framework: mpi\n  command: mpi_hello.py\n  procs_per_node: 2"
    output = _launch(cli, cluster, job, timeout=180)
    size = 2 * NODES
    # mpirun runs on the head, so every line comes back through node-0's log; ranks fill
    # the nodes in order, two on each; every line whole (one write per line in each rank).
    for rank in range(size):
        line = rf"^\[node-0\] rank {rank} of {size} on node-{rank // 2}$"
        assert re.search(line, output, re.M), output
    assert f"succeeded on {NODES} node(s), {size} process(es)" in output
    expected = size * (size - 1) // 2
    assert f"allreduce sum of ranks = {expected} (expected {expected}) size={size}" in output


def test_accelerate_multi_cpu_across_nodes(cli: Cli, cluster: tuple[str, Path]) -> None:
    output = _launch(
        cli,
        cluster,
        "framework: accelerate\n  command: train_accelerate.py --steps 120",
        timeout=300,
    )
    # Not `DistributedType.NO` and num_processes=1 on each node: one job across the nodes.
    for rank in range(NODES):
        assert (
            f"[node-{rank}] distributed_type=MULTI_CPU num_processes={NODES} process_index={rank}"
            in output
        )
    assert f"[node-0] done steps=120 num_processes={NODES}" in output
    losses = _losses(output)
    assert len(losses) == 6 and losses[-1] < losses[0]


def build_deepspeed_op() -> None:
    """Compile DeepSpeed's CPU communication op into EXTENSIONS, as the nodes would on first
    use (about 30 s on a quiet machine, minutes under load), unless an earlier run did.

    With the environment and PATH of the nodes (the same ninja), so they find it up to date
    rather than rebuilding it; their own build would work too (torch's lock in the shared
    directory lets one node build while the others wait) but would count against the job."""
    EXTENSIONS.mkdir(parents=True, exist_ok=True)
    for lock in EXTENSIONS.glob("*/lock"):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)
    bin_dir = str(Path(sys.executable).parent)  # the venv's, not resolved
    env = {
        **os.environ,
        "TORCH_EXTENSIONS_DIR": str(EXTENSIONS),
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }
    built = subprocess.run(
        [sys.executable, "-c", _BUILD_OP], env=env, capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]


def test_deepspeed_across_nodes(cli: Cli, cluster: tuple[str, Path]) -> None:
    build_deepspeed_op()
    output = _launch(
        cli,
        cluster,
        "framework: deepspeed\n  command: train_deepspeed.py --steps 120",
        timeout=600,
    )
    for rank in range(NODES):
        assert f"[node-{rank}] world_size={NODES} rank={rank}" in output
    assert f"[node-0] done steps=120 world_size={NODES}" in output
    losses = _losses(output)
    assert len(losses) == 6 and losses[-1] < losses[0]
