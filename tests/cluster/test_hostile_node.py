"""A node that answers with crafted output, on a real local cluster: its tar stream during
`sync --down`, file names with tabs and newlines, a bogus PID marker from its shell init. None
of it may write outside the pull folder or crash dlvm."""

from __future__ import annotations

import base64
import gzip
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from crafted_tar import archive, path_max_chain
from harness import Cli, unique_name, write_spec

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
