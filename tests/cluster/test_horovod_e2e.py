"""Horovod for real on a local cluster whose nodes cannot reach the package index: `up`
gives Horovod to the nodes that lack it (a wheel this machine has cached, or the pinned
source for the head to build, sent from here; the head's wheel copied to the others over
the cluster's SSH; the pinned dependencies a node lacks sent as wheels) and refuses up
front, leaving nothing, when it can neither be sent a wheel nor build; examples/
local-horovod.yaml's job runs across 2 nodes x 2 processes with horovodrun --gloo from the
head; detach + cancel leaves nothing behind; the elastic form keeps training through
`dlvm scale` 2 -> 3.

No index: the cluster's setup deletes each node's default route (its network namespace then
reaches only the cluster's subnet, which this machine is on), its env turns off this
machine's pip configuration (seen through the nodes' layers, it names local package
folders a VM would not have) and gives the nodes a wheel cache of their own, empty, in their
private /tmp. Had dlvm left anything to a node's index, `up` would fail.

Local nodes share the host's filesystem, so they would all run the Python this test runs,
which has Horovod (examples/install.sh --dev installs it; without it these tests fail). To
have nodes that really lack it, the cluster's setup gives node-0 and node-1 a Python
environment of their own in their private homes (~/hvd-env): the host's packages minus
Horovod and cloudpickle (one of its pinned dependencies), seen through a folder of links.
`up` must then find Horovod missing on both, send the head the wheel this machine cached
(install.sh --dev built it: the full build is not repeated here; a failing case runs the
source sent from here as far as CMake), install it there, send it to node-1 over the
intra-cluster SSH and install it into node-1's environment, with the cloudpickle wheel
this machine fetched for node-1's Python. A node
added later by `dlvm scale` (node-2) keeps the host's Python, which has Horovod: it is left
alone. horovodrun and the job's workers run the nodes' own environments: PATH names
~/hvd-env/bin first, which exists only on node-0 and node-1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name, wait_until
from system import namespace_processes

pytestmark = pytest.mark.training

BUILD_SCRIPT = REPO / "dlvm_cluster" / "nodeside" / "build_horovod.sh"
EXAMPLE = REPO / "examples" / "local-horovod.yaml"
EXAMPLE_JOB = EXAMPLE.read_text().split("\njob:\n", 1)[1]
"""The example's job section, run as written (2 processes per node, train_horovod.py)."""
NODE_ENV = Path.home() / "hvd-env"  # on node-0 and node-1 only, in their own homes
PROCS = 2
NO_INDEX = "PIP_CONFIG_FILE: /dev/null, XDG_CACHE_HOME: /tmp/hvd-cache"
"""The nodes' pip without this machine's configuration, and a wheel cache of their own."""
SIZE = 2 * PROCS


@dataclass(frozen=True)
class HorovodCluster:
    name: str
    folder: Path
    site: Path
    failed_up: subprocess.CompletedProcess[str]  # the first up, with no compiler to build
    after_failure: str  # what the nodes had then: Horovod or not, and their stamps
    fetched_then: bool  # whether this machine had fetched the source by then
    local_cache: Path  # this machine's cache for the failing ups (no wheel in it)
    source_up: subprocess.CompletedProcess[str]  # an up whose build gets the source sent
    up: dict[str, object]  # `up --json` of the first up that succeeded

    def spec(self, job: str = EXAMPLE_JOB) -> Path:
        return _spec(self.folder, self.name, self.site, job)


def _require_horovod() -> None:
    """Fails (never skips) when the Python running dlvm cannot run Horovod, and makes sure
    its wheel is cached (seconds when install.sh --dev built it)."""
    found = subprocess.run(
        [sys.executable, "-c", "import horovod.torch"], capture_output=True, text=True
    )
    if found.returncode != 0 or not (Path(sys.executable).parent / "horovodrun").exists():
        pytest.fail(
            f"Horovod is not installed ({found.stderr.strip()[-300:]}); "
            "run examples/install.sh --dev"
        )
    cached = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "wheel"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert cached.returncode == 0, cached.stdout[-2000:] + cached.stderr[-2000:]


def _site_without_horovod(folder: Path) -> Path:
    """A folder of links to every entry of this Python's site-packages but Horovod's."""
    site = folder / "site"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("horovod", "cloudpickle")):
            (site / entry.name).symlink_to(entry)
    return site


def _with_command(command: str) -> str:
    """The example's job with another command."""
    job = re.sub(r"(?m)^  command: .*$", f"  command: {command}", EXAMPLE_JOB)
    assert command in job
    return job


def _spec(folder: Path, name: str, site: Path, job: str, extra_env: str = "") -> Path:
    path = folder / f"{name}-{abs(hash(job + extra_env)) % 10**8}.yaml"
    path_env = f"{NODE_ENV}/bin:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    pth = f"import site; site.addsitedir({str(site)!r})"
    setup = (
        "/usr/sbin/ip route del default 2>/dev/null || true\n  "
        'if [ "$DLVM_NODE_RANK" -lt 2 ]; then\n'
        "    python3 -m venv --without-pip ~/hvd-env\n"
        f'    echo {json.dumps(pth)} > "$(~/hvd-env/bin/python -c '
        '\'import sysconfig; print(sysconfig.get_paths()["purelib"])\')/host-site.pth"\n'
        "  fi\n"
    )
    path.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 2}\n"
        f"env: {{OMP_NUM_THREADS: 1, PATH: {json.dumps(path_env)}, {NO_INDEX}{extra_env}}}\n"
        f"files:\n  - {{src: {REPO / 'examples' / 'train_horovod.py'}, dst: ~/work}}\n"
        f"setup: |\n  {setup}"
        f"job:\n{job}"
    )
    return path


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HorovodCluster]:
    _require_horovod()
    name = unique_name("hvd")
    folder = tmp_path_factory.mktemp("horovod")
    # Under /var/tmp: the nodes' /tmp is their own.
    shared = Path(f"/var/tmp/dlvm-tests-{name}")
    shared.mkdir()
    site = _site_without_horovod(shared)
    spec = _spec(folder, name, site, EXAMPLE_JOB)
    # First with a compiler that does not exist, and no wheel cached here or on the nodes:
    # the head must refuse to build, naming it, and nothing is fetched, sent or left.
    local_cache = shared / "local-cache"
    without_wheel = {"XDG_CACHE_HOME": str(local_cache)}
    broken = _spec(folder, name, site, EXAMPLE_JOB, ", CXX: no-such-c++")
    try:
        failed = cli.run("up", str(broken), timeout=900, env=without_wheel)
        check = (
            "python3 -c 'import horovod' 2>/dev/null && echo has-horovod || echo no-horovod; "
            f"ls ~/.dlvm/node-files/{name}"
        )
        after = cli.run("exec", name, "--", check).stdout
        fetched = (local_cache / "dlvm" / "sources").exists()
        # Then with a compiler that fails at once: the head builds from the source this
        # machine fetched and sent, until CMake stops (seconds, not the whole build).
        failing = _spec(folder, name, site, EXAMPLE_JOB, ", CXX: /bin/false")
        source_up = cli.run("up", str(failing), timeout=900, env=without_wheel)
        up = cli.run("up", str(spec), "--json", timeout=900, check=True)
        yield HorovodCluster(
            name,
            folder,
            site,
            failed,
            after,
            fetched,
            local_cache,
            source_up,
            json.loads(up.stdout),
        )
    finally:
        cli.run("down", name, "--yes")
        shutil.rmtree(shared, ignore_errors=True)


def _local_wheel_hashes() -> set[str]:
    """The hashes of the wheels cached on this machine (install.sh --dev built one)."""
    wheels = (Path.home() / ".cache" / "dlvm" / "wheels").glob("horovod-*/horovod-*.whl")
    return {hashlib.sha256(wheel.read_bytes()).hexdigest() for wheel in wheels}


def _exec(cli: Cli, name: str, node: str, command: str) -> str:
    result = cli.run("exec", name, "-n", node, "--", command, check=True)
    return result.stdout


def test_a_build_that_cannot_start_names_the_compiler_and_leaves_nothing(
    cluster: HorovodCluster,
) -> None:
    failed = cluster.failed_up
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "cannot build Horovod on node-0" in failed.stderr
    assert "no C++ compiler (no-such-c++)" in failed.stderr
    assert "Traceback" not in failed.stderr
    # Nothing installed, nothing stamped, no wheel sent: the next up starts over.
    assert "[node-0] no-horovod" in cluster.after_failure
    assert "[node-1] no-horovod" in cluster.after_failure
    assert "horovod.sha256" not in cluster.after_failure
    assert "wheels" not in cluster.after_failure
    assert "supply" not in cluster.after_failure  # nothing sent
    assert not cluster.fetched_then  # nor fetched here


def test_the_nodes_cannot_reach_the_index(cli: Cli, cluster: HorovodCluster) -> None:
    """What the rest stands on: a node's own pip, asked for Horovod, gets nowhere."""
    fetch = (
        "ip route show default | grep -q . && echo has-route; "
        "python3 -m pip download -q --no-deps --retries 0 --timeout 5 -d /tmp/try horovod==0.28.1"
        " >/dev/null 2>&1 && echo fetched || echo cannot-fetch"
    )
    found = _exec(cli, cluster.name, "node-1", f"PATH=$PATH:/usr/sbin; {fetch}")
    assert "[node-1] cannot-fetch" in found and "has-route" not in found


def test_the_head_builds_from_the_source_sent_from_here(cluster: HorovodCluster) -> None:
    output = cluster.source_up.stdout + cluster.source_up.stderr
    assert cluster.source_up.returncode == 1, output[-3000:]
    # Fetched here once, with the pinned hash, and kept; sent to the head; used there.
    kept = cluster.local_cache / "dlvm" / "sources" / "horovod-0.28.1.tar.gz"
    assert kept.is_file()
    assert "sending the 0.28.1 source to node-0" in output
    assert "using the horovod 0.28.1 source sent with the build" in output
    assert "fetching the horovod" not in output  # the head never asked its index
    # cloudpickle, which the head lacked, came with it: installed before the build.
    assert "installing cloudpickle==3.1.1 from the wheels sent with the build" in output
    assert "cannot build Horovod on node-0" in output and "the build failed" in output


def test_up_installs_horovod_only_where_missing(cli: Cli, cluster: HorovodCluster) -> None:
    name = cluster.name
    assert cluster.up["setup"]["horovod"] == ["node-0", "node-1"]  # type: ignore[index]
    where = "python3 -c 'import horovod; print(horovod.__file__)'"
    # Both installed into their own environment: the head from its wheel, node-1 from the
    # wheel the head sent it.
    for node in ("node-0", "node-1"):
        assert f"[{node}] {NODE_ENV}/lib/" in _exec(cli, name, node, where)
    wheels = _exec(cli, name, "node-1", f"ls ~/.dlvm/node-files/{name}/wheels")
    assert re.search(r"\[node-1\] horovod-0\.28\.1-.*\.whl", wheels)
    # The head's wheel is the one this machine cached, sent, checked and cached there.
    theirs = _exec(cli, name, "node-0", "sha256sum /tmp/hvd-cache/dlvm/wheels/*/horovod-*.whl")
    sent = re.findall(r"\[node-0\] ([0-9a-f]{64})  ", theirs)
    assert len(sent) == 1 and sent[0] in _local_wheel_hashes(), theirs
    # node-1 lacked cloudpickle: it got the pinned one, sent from here, into its own Python.
    pickle = "python3 -c 'import cloudpickle as c; print(c.__version__, c.__file__)'"
    assert f"[node-1] 3.1.1 {NODE_ENV}/lib/" in _exec(cli, name, "node-1", pickle)
    deps = _exec(cli, name, "node-1", f"ls ~/.dlvm/node-files/{name}/supply/deps")
    assert "cloudpickle-3.1.1-py3-none-any.whl" in deps
    # The stamp covers it: a second up finds nothing to do.
    again = json.loads(cli.run("up", str(cluster.spec()), "--json", check=True).stdout)
    assert again["changed"] is False and again["setup"]["horovod"] == []


def _done_lines(output: str) -> dict[int, str]:
    """rank -> the `done` line train_horovod.py printed on it."""
    return {
        int(m.group(1)): m.group(0)
        for m in re.finditer(
            r"done rank=(\d+) local_rank=\d+ size=\d+ host=\S+ allreduce_sum_of_ranks=\d+", output
        )
    }


def test_horovod_two_nodes_two_processes_each(cli: Cli, cluster: HorovodCluster) -> None:
    name = cluster.name
    before = namespace_processes(name)
    result = cli.run("launch", str(cluster.spec()), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = _done_lines(result.stdout)
    expected_sum = SIZE * (SIZE - 1) // 2
    assert sorted(done) == list(range(SIZE)), result.stdout[-3000:]
    # horovodrun runs on the head alone, yet the job spans every node.
    assert f"succeeded on {SIZE // PROCS} node(s), {SIZE} process(es)" in result.stdout
    for rank, line in done.items():
        assert (
            f"local_rank={rank % PROCS} size={SIZE} host=node-{rank // PROCS} "
            f"allreduce_sum_of_ranks={expected_sum}" in line
        )

    def left() -> dict[int, str]:
        return {pid: args for pid, args in namespace_processes(name).items() if pid not in before}

    wait_until(lambda: left() == {}, 15, interval=0.2, message=lambda: f"left: {left()}")


def test_detached_horovod_job_cancelled_leaves_nothing(cli: Cli, cluster: HorovodCluster) -> None:
    name = cluster.name
    before = namespace_processes(name)
    spec = cluster.spec(_with_command("train_horovod.py --steps 1000000"))
    started = cli.run("launch", str(spec), "--detach", check=True)
    job_id = re.search(r"job (\S+) started", started.stdout)
    assert job_id

    def workers() -> list[str]:
        return [
            args
            for pid, args in namespace_processes(name).items()
            if "train_horovod.py" in args and pid not in before
        ]

    # horovodrun on the head, and its 4 workers (2 per node) training.
    wait_until(
        lambda: (
            "size=4 rank=3" in cli.run("logs", name, job_id.group(1)).stdout
            and "size=4 rank=0" in cli.run("logs", name, job_id.group(1)).stdout
        ),
        120,
        interval=1,
        message=lambda: cli.run("logs", name, job_id.group(1)).stdout[-2000:],
    )
    assert any("horovodrun" in args for args in workers())
    cancelled = cli.run("cancel", name, job_id.group(1), check=True)
    assert "no process of it is left" in cancelled.stdout

    def left() -> dict[int, str]:
        return {pid: args for pid, args in namespace_processes(name).items() if pid not in before}

    wait_until(lambda: left() == {}, 15, interval=0.2, message=lambda: f"left: {left()}")
    assert cli.status(name)["jobs"][-1]["state"] == "cancelled"  # type: ignore[index]


def test_elastic_horovod_keeps_training_through_scale_up(cli: Cli, cluster: HorovodCluster) -> None:
    """Last in the module: it grows the cluster to 3 nodes."""
    name = cluster.name
    command = "train_horovod.py --elastic --steps 1000000 --step-delay 0.05"
    job = _with_command(command) + '  nnodes: "2:3"\n'
    cli.run("up", str(cluster.spec(job)), check=True)  # the job scale will grow
    started = cli.run("launch", name, "--detach", check=True)
    found = re.search(r"job (\S+) started", started.stdout)
    assert found
    job_id = found.group(1)

    def log() -> str:
        return cli.run("logs", name, job_id, timeout=120).stdout

    def steps_at(size: int) -> list[int]:
        return [int(s) for s in re.findall(rf"step (\d+) loss \S+ size {size}\b", log())]

    wait_until(lambda: len(steps_at(4)) >= 2, 240, interval=2, message=lambda: log()[-3000:])
    grown = cli.run("scale", name, "3", "--yes", check=True, timeout=600)
    assert f"joined job(s) {job_id}" in grown.stdout
    before = max(steps_at(4))
    # horovodrun found node-2 through its discovery (the rewritten hostfile) and started
    # 2 workers there: training goes on at size 6, from where it was.
    wait_until(lambda: len(steps_at(6)) >= 2, 300, interval=2, message=lambda: log()[-3000:])
    assert min(steps_at(6)) >= before - 20  # from the last commit, not from the start
    assert "size=6 rank=5" in log()
    # node-2 had Horovod (the host's Python): left alone, no wheel sent to it.
    where = "python3 -c 'import horovod; print(horovod.__file__)'"
    assert f"[node-2] {sysconfig.get_paths()['purelib']}/horovod/" in _exec(
        cli, name, "node-2", where
    )
    assert "wheels" not in _exec(cli, name, "node-2", f"ls ~/.dlvm/node-files/{name}")
    cancelled = cli.run("cancel", name, job_id, check=True)
    assert "no process of it is left" in cancelled.stdout
    left = [args for args in namespace_processes(name).values() if "horovod" in args]
    assert left == []
