"""A node that answers with crafted output, on a real local cluster: its tar stream during
`sync --down`, file names with tabs and newlines, a bogus PID marker from its shell init, a
`dlvm check` result line nested past the JSON parser, a job's exit file holding garbage. None
of it may write outside the pull folder or crash dlvm."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from crafted_tar import archive, path_max_chain
from harness import Cli, unique_name, write_spec

from dlvm_cluster.inventory import node_dir

HOSTILE = "node-1"


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = unique_name("hn")
    project = tmp_path_factory.mktemp("project")
    (project / "data").mkdir()
    (project / "data" / "kept").write_text("kept")
    spec = write_spec(project, name, 3, "files:\n  - {src: data, dst: ~/data}\n")
    cli.run("up", str(spec), check=True)
    try:
        yield name
    finally:
        cli.run("down", name, "--yes")


def on_node(cli: Cli, cluster: str, script: str) -> None:
    cli.run("exec", cluster, "-n", HOSTILE, "--", script, check=True)


@pytest.fixture
def shell_init(cli: Cli, cluster: str) -> Iterator[list[str]]:
    """Lines the test adds to the hostile node's ~/.bashrc, which every remote command on it
    runs first; the node's own ~/.bashrc is put back afterwards."""
    lines: list[str] = []
    on_node(cli, cluster, "cp ~/.bashrc ~/.bashrc.own")
    try:
        yield lines
    finally:
        cli.run("exec", cluster, "-n", HOSTILE, "--", "mv ~/.bashrc.own ~/.bashrc", check=True)


def install_init(cli: Cli, cluster: str, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    on_node(cli, cluster, f"printf %s {shlex.quote(text)} >> ~/.bashrc")


def outside(tmp_path: Path, pull: Path) -> list[str]:
    """Every path under tmp_path that is not under the pull folder."""
    found = []
    for root, dirs, files in os.walk(tmp_path):
        if Path(root) == pull.parent and pull.name in dirs:
            dirs.remove(pull.name)
        found += [str((Path(root) / name).relative_to(tmp_path)) for name in dirs + files]
    return sorted(found)


def test_a_node_serving_a_crafted_archive_writes_nothing_outside_the_pull_folder(
    cli: Cli, cluster: str, shell_init: list[str], tmp_path: Path
) -> None:
    cli.run("exec", cluster, "--", "mkdir -p ~/out && hostname > ~/out/who", check=True)
    # The node's `tar -c` answers with the PATH_MAX symlink chain of CVE-2025-4517, whose
    # `escape` link leads to tmp_path/outside: through it, a file `planted` would land there.
    chain = path_max_chain("../outside")
    crafted = base64.b64encode(gzip.compress(archive(*chain).getvalue())).decode()
    on_node(
        cli,
        cluster,
        f"mkdir -p ~/hostile-bin && echo {crafted} | base64 -d | gunzip > ~/hostile.tar && "
        "printf '#!/bin/sh\\nexec cat \"$HOME/hostile.tar\"\\n' > ~/hostile-bin/tar && "
        "chmod +x ~/hostile-bin/tar",
    )
    shell_init.append('export PATH="$HOME/hostile-bin:$PATH"')
    install_init(cli, cluster, shell_init)
    (tmp_path / "outside").mkdir()
    pull = tmp_path / "pull"
    before = outside(tmp_path, pull)

    result = cli.run("sync", cluster, "--down", "--remote", "~/out", "--local", str(pull))

    assert not (tmp_path / "outside" / "planted").exists()
    assert outside(tmp_path, pull) == before
    assert result.returncode == 1, result.stdout + result.stderr
    long_link = chain[-3][0].name
    assert f"{HOSTILE}: refused {long_link!r}" in result.stderr
    for node in ("node-0", "node-2"):
        assert (pull / node / "who").read_text().strip() == node
    assert sorted(os.listdir(pull)) == ["node-0", "node-1", "node-2"]


def test_names_with_tabs_and_newlines_on_a_node_are_synced_and_deleted(
    cli: Cli, cluster: str
) -> None:
    nasty = "a\tf\tx\ty\tz\t\nb"  # a tab-separated record of its own, then a newline
    on_node(cli, cluster, f"mkdir -p ~/data && printf x > ~/data/{shlex.quote(nasty)}")
    cli.run("sync", cluster, check=True)
    on_node(cli, cluster, f"test -e ~/data/{shlex.quote(nasty)}")  # kept without --delete
    cli.run("sync", cluster, "--delete", check=True)
    on_node(cli, cluster, f"test ! -e ~/data/{shlex.quote(nasty)} && test -e ~/data/kept")


def test_a_bogus_pid_marker_from_a_node_does_not_crash_exec(
    cli: Cli, cluster: str, shell_init: list[str]
) -> None:
    shell_init.append("printf '\\036dlvm-pid abc\\n' >&2")
    install_init(cli, cluster, shell_init)
    result = cli.run("exec", cluster, "--", "echo hello from $(hostname)")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in ("node-0", "node-1", "node-2"):
        assert f"hello from {node}" in result.stdout


def test_a_pull_of_a_real_tree_keeps_inside_links_and_gets_hard_links_as_files(
    cli: Cli, cluster: str, tmp_path: Path
) -> None:
    tree = (
        "rm -rf ~/tree && mkdir -p ~/tree/blobs ~/tree/snap/v1 && cd ~/tree && "
        "printf weights > blobs/abc && ln blobs/abc snap/v1/hard && "
        "ln -s ../../blobs/abc snap/v1/model && ln -s snap/v1 latest && "
        "printf run > 'tab\tand\nnewline' && chmod 4755 'tab\tand\nnewline'"
    )
    cli.run("exec", cluster, "-n", "node-0", "--", tree, check=True)
    pull = tmp_path / "pull"
    for _ in range(2):  # the second pull replaces what the first wrote
        cli.run(
            "sync",
            cluster,
            "--down",
            "-n",
            "node-0",
            "--remote",
            "~/tree",
            "--local",
            str(pull),
            check=True,
        )
    node = pull / "node-0"
    assert (node / "snap" / "v1" / "hard").read_bytes() == b"weights"
    assert (node / "snap" / "v1" / "hard").stat().st_nlink == 1
    assert os.readlink(node / "snap" / "v1" / "model") == "../../blobs/abc"
    assert (node / "latest" / "model").read_bytes() == b"weights"
    assert ((node / "tab\tand\nnewline").stat().st_mode & 0o7777) == 0o755


def test_a_check_line_nested_past_the_parser_is_output_not_a_crash(
    cli: Cli, cluster: str, shell_init: list[str]
) -> None:
    """A node's shell init printing the result marker and 1,990 `[` made `dlvm check` end
    with a RecursionError traceback."""
    shell_init.append('printf "@dlvm-check %s\\n" "$(head -c 1990 /dev/zero | tr "\\0" "[")"')
    install_init(cli, cluster, shell_init)
    result = cli.run("check", cluster, "--json", timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode in (0, 1), result.stderr[-2000:]
    json.loads(result.stdout)  # the report, whatever the verdict


def test_a_jobs_exit_file_holding_garbage_does_not_crash_status(
    cli: Cli, cluster: str, tmp_path: Path
) -> None:
    """With the job's supervisor gone (killed, as a reboot of this machine would), status asks
    the nodes; node-1 wrote `x` in the job's exit file."""
    spec = write_spec(tmp_path, cluster, 3, "job: {framework: none, command: 'sleep 20'}\n")
    started = cli.run("launch", str(spec), "--detach", check=True)
    job_id = next(j["id"] for j in cli.status(cluster)["jobs"] if j["state"] == "running")  # type: ignore[attr-defined,index]
    assert job_id in started.stdout
    record = cli.home / "clusters" / cluster / "jobs" / f"{job_id}.json"
    supervisor = int(json.loads(record.read_text())["supervisor"].partition(":")[0])
    os.kill(supervisor, signal.SIGKILL)  # the detached supervisor this test's launch started
    folder = shlex.quote(f"{node_dir(cluster)}/jobs/{job_id}").replace("'~/", "~/'")
    for node, text in (("node-0", "0"), ("node-1", "x"), ("node-2", "")):
        cli.run("exec", cluster, "-n", node, "--", f"printf '{text}' > {folder}/exit", check=True)
    status = cli.run("status", cluster, "--json")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr[-2000:]
    job = next(j for j in json.loads(status.stdout)["jobs"] if j["id"] == job_id)
    assert job["state"] == "failed"
    assert job["exit_codes"] == {"node-0": 0, "node-1": None, "node-2": None}
    assert cli.run("status", cluster).returncode == 0
    cancelled = cli.run("cancel", cluster, job_id)  # ends the job's processes on the nodes
    assert cancelled.returncode == 0, cancelled.stderr
