"""`dlvm top` and `dlvm dashboard` on one real 3-node local cluster.

Node 1 has GPUs: an `nvidia-smi` in its own home (first on the cluster env's PATH) printing
a recorded sample (tests/fixtures/nvidia_smi/h100x8_util.csv); the others have none. Nodes
are kept busy by spinning shells. Shown: the busy node named as busier, an idle node among
busy ones marked far below, GPU fields as recorded, the same SSH connections from one
refresh to the next (the nodes' own sockets say so), Ctrl-C leaving the cluster as it was, a
node whose sshd is frozen shown as not answering, a node whose python3 lies refused; the
dashboard in headless Chromium: the cluster, its nodes, GPUs and job, charts that update.

Set DLVM_SCREENSHOTS=docs to write the README's pictures (docs/top.svg, docs/dashboard.png).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Cli, start_agent, unique_name, wait_until, write_spec
from system import namespaces

from dlvm_cluster.nodeside.metrics import GPU_FIELDS
from dlvm_cluster.remote import agent_client
from dlvm_cluster.state import ClusterState, python_bin_dir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia_smi" / "h100x8_util.csv"
SIM = "gpu-sim"  # the folder in a node's home that comes first on the cluster's PATH
# The job's output holds markup: the dashboard must show it as text.
JOB = "echo '<b id=injected>hi</b>'; for i in 1 2 3; do echo step $i loss 0.$i; sleep 0.2; done"
SCREENSHOTS = os.environ.get("DLVM_SCREENSHOTS", "")


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = unique_name("top")
    folder = tmp_path_factory.mktemp("top")
    files = folder / "sim-files"
    files.mkdir()
    shutil.copy(FIXTURE, files / "sample.csv")
    (files / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = "--query-gpu={GPU_FIELDS}" ] && [ "$2" = "--format=csv,noheader,nounits" ] '
        f'&& exec cat "$HOME/sim-files/sample.csv"\nexit 6\n'
    )
    # A python3 that lies: its answer is a JSON string (with a terminal escape), no object.
    (files / "python3-liar").write_text(
        "#!/bin/sh\nprintf '%s\\n' '@dlvm-metrics \"\\u001b]52;c;aGk=\\u0007\"'\n"
    )
    system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    path = f"{Path.home()}/{SIM}:{python_bin_dir()}:{system}"
    spec = write_spec(
        folder,
        name,
        3,
        f"env:\n  PATH: {path}\n"
        f"files:\n  - {{src: sim-files, dst: ~/sim-files}}\n"
        f"job:\n  framework: none\n  command: {JOB!r}\n",
    )
    try:
        cli.run("up", str(spec), check=True)
        _exec(cli, name, f"mkdir -p ~/{SIM} && install -m 755 ~/sim-files/nvidia-smi ~/{SIM}/", "1")
        cli.run("launch", name, check=True)  # a job to show: its events and log lines
        yield name
    finally:
        cli.run("down", name, "--yes")


def _exec(cli: Cli, name: str, command: str, nodes: str) -> None:
    cli.run("exec", name, "--nodes", nodes, "--", command, check=True, timeout=120)


@contextlib.contextmanager
def busy(cli: Cli, name: str, nodes: str) -> Iterator[None]:
    """Two spinning shells on each of `nodes` (ranks), detached from the exec's session."""
    spin = "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & echo $! >> ~/busy.pids"
    _exec(cli, name, f"{spin}; {spin}", nodes)
    try:
        yield
    finally:
        _exec(cli, name, "kill $(cat ~/busy.pids); rm -f ~/busy.pids", nodes)


def _top(cli: Cli, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", "top", name, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli.env(), "COLUMNS": "200", **env},
    )


def _frame(cli: Cli, name: str, **env: str) -> dict[str, dict[str, Any]]:
    done = _top(cli, name, "--json", **env)
    assert done.returncode == 0, done.stderr
    return {node["name"]: node for node in json.loads(done.stdout)["nodes"]}


def _sessions(name: str) -> set[str]:
    """The SSH connections the nodes' sshds hold now (local and peer address of each)."""
    found = set()
    for namespace in namespaces(name):
        out = subprocess.run(
            ["ip", "netns", "exec", namespace, "ss", "-tnH", "state", "established"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[-2].endswith(":22"):
                found.add(f"{fields[-2]} {fields[-1]}")
    return found


def test_top_names_the_busy_node_and_shows_recorded_gpus(cli: Cli, cluster: str) -> None:
    with busy(cli, cluster, "0"):

        def busier() -> dict[str, dict[str, Any]] | None:
            nodes = _frame(cli, cluster)
            cpu = {name: node["cpu_percent"] for name, node in nodes.items()}
            others = max(cpu["node-1"], cpu["node-2"])
            return nodes if cpu["node-0"] > max(5.0, 2 * others) else None

        nodes = wait_until(busier, 120, interval=0.5, message="node-0 never showed busier")
    assert list(nodes) == ["node-0", "node-1", "node-2"]
    for node in nodes.values():
        assert set(node) == {
            "name",
            "cpu_percent",
            "memory_used_bytes",
            "memory_total_bytes",
            "net_rx_bytes_per_s",
            "net_tx_bytes_per_s",
            "gpus",
        }
        assert 0 < node["memory_used_bytes"] < node["memory_total_bytes"]
    assert nodes["node-0"]["gpus"] == [] and nodes["node-2"]["gpus"] == []
    gpus = nodes["node-1"]["gpus"]
    assert [gpu["index"] for gpu in gpus] == list(range(8))
    assert gpus[0] == {
        "index": 0,
        "util_percent": 97.0,
        "memory_used_bytes": 71234 << 20,
        "memory_total_bytes": 81559 << 20,
        "temperature_c": 67.0,
        "power_w": 612.45,
    }
    assert gpus[7]["power_w"] is None  # [N/A] in the sample


def test_an_idle_node_among_busy_ones_is_marked(cli: Cli, cluster: str) -> None:
    with busy(cli, cluster, "0,2"):

        def marked() -> str | None:
            done = _top(cli, cluster, "--once")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            lagging = [
                name
                for name in ("node-0", "node-1", "node-2")
                if any(name in line and "far below the others" in line for line in lines)
            ]
            return done.stdout if lagging == ["node-1"] else None

        shown = wait_until(marked, 120, interval=0.5, message="node-1 was never marked")
    assert "job " in shown and "succeeded" in shown and "step 3 loss 0.3" in shown


def test_live_top_reuses_its_connections_and_ctrl_c_leaves(
    cli: Cli, cluster: str, tmp_path: Path
) -> None:
    session = unique_name("top")
    # The pane's size said twice: a tmux server started from here may give its first window
    # 80x24 whatever -x and -y say, and rich reads COLUMNS and LINES first.
    env = {**cli.env(), "DLVM_NO_AGENT": "1", "TERM": "xterm-256color", "COLUMNS": "160"}
    env["LINES"] = "40"
    env.pop("NO_COLOR", None)
    script = tmp_path / "top.sh"
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    # The shell waits out top's Ctrl-C (a trap, not ignored: top gets the signal) to say how
    # top exited.
    script.write_text(
        f"{exports}trap true INT\n{shlex.quote(sys.executable)} -m dlvm_cluster top {cluster}\n"
        f"echo exit=$? > {tmp_path}/rc\n"
    )
    rc = tmp_path / "rc"
    with busy(cli, cluster, "0,2"):
        before = _sessions(cluster)
        tmux = ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40"]
        subprocess.run([*tmux, f"sh {script}"], check=True)
        try:

            def clock() -> str:
                screen = _capture(session)
                found = re.search(r"answering\s+(\d\d:\d\d:\d\d)", screen)
                return found.group(1) if found and "3/3 node(s) answering" in screen else ""

            first = wait_until(clock, 60, interval=0.2, message=lambda: _capture(session))
            opened = _sessions(cluster) - before
            assert len(opened) == 3  # one connection per node
            seen = {first}
            while len(seen) < 4:  # three more refreshes
                seen.add(wait_until(lambda: (c := clock()) not in seen and c, 30, interval=0.2))
                assert _sessions(cluster) - before == opened  # the same connections, no new one
            if SCREENSHOTS:
                _save_svg(_capture(session, colour=True), Path(SCREENSHOTS) / "top.svg")
            subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
            wait_until(rc.exists, 30, message=lambda: _capture(session))
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        assert rc.read_text().strip() == "exit=0"
        assert _sessions(cluster) - before == set()  # nothing left open on the nodes
        # The cluster as it was: the spinning shells still run.
        _exec(cli, cluster, "kill -0 $(cat ~/busy.pids)", "0,2")


def test_top_into_a_pipe_prints_frame_after_frame(cli: Cli, cluster: str) -> None:
    with cli.background("top", cluster, COLUMNS="200") as process:
        assert process.stdout is not None
        stream = process.stdout
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
        reader.start()
        wait_until(lambda: sum("node(s) answering" in line for line in lines) >= 2, 60)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        reader.join(10)
    frames = [line for line in lines if "node(s) answering" in line]
    assert len(frames) >= 2 and all("3/3" in frame for frame in frames)


def _capture(session: str, *, colour: bool = False) -> str:
    args = ["tmux", "capture-pane", "-p", "-t", session] + (["-e"] if colour else [])
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def _save_svg(screen: str, path: Path) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(Text.from_ansi(screen.rstrip("\n")))
    path.write_text(console.export_svg(title="dlvm top"))


def test_top_through_the_agent_asks_it_and_opens_nothing(
    cli: Cli, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = cli.home / "clusters" / cluster
    monkeypatch.setenv("DLVM_HOME", str(cli.home))
    try:
        if agent_client.ping(state_dir) is None:
            start_agent(ClusterState.for_name(cluster))
        served = agent_client.ping(state_dir)["served"]  # type: ignore[index]
        _frame(cli, cluster)
        held = _sessions(cluster)
        assert len(held) >= 3
        _frame(cli, cluster)
        _frame(cli, cluster)
        assert _sessions(cluster) == held  # the agent's connections, nothing new
        assert agent_client.ping(state_dir)["served"] == served + 3  # type: ignore[index]
    finally:
        agent_client.request(state_dir, {"op": "stop"})


def test_a_node_that_does_not_answer_is_shown_as_such(cli: Cli, cluster: str) -> None:
    pid_files = list((cli.home / "clusters" / cluster).rglob("nodes/node-2/sshd.pid"))
    assert len(pid_files) == 1
    sshd = int(pid_files[0].read_text())
    os.kill(sshd, signal.SIGSTOP)  # accepts nothing more: new connections hang
    try:
        nodes = _frame(cli, cluster, DLVM_NO_AGENT="1")
        text = _top(cli, cluster, "--once", DLVM_NO_AGENT="1")
    finally:
        os.kill(sshd, signal.SIGCONT)
    assert nodes["node-2"]["cpu_percent"] is None and nodes["node-2"]["gpus"] == []
    assert nodes["node-0"]["cpu_percent"] is not None
    assert text.returncode == 0
    assert "2/3 node(s) answering" in text.stdout
    assert re.search(r"node-2\s.*not answering", text.stdout)


def test_a_node_whose_python_lies_is_refused(cli: Cli, cluster: str) -> None:
    _exec(
        cli,
        cluster,
        f"mkdir -p ~/{SIM} && install -m 755 ~/sim-files/python3-liar ~/{SIM}/python3",
        "0",
    )
    try:
        nodes = _frame(cli, cluster)
        text = _top(cli, cluster, "--once")
    finally:
        _exec(cli, cluster, f"rm -f ~/{SIM}/python3", "0")
    assert nodes["node-0"]["cpu_percent"] is None
    assert nodes["node-1"]["cpu_percent"] is not None
    assert re.search(r"node-0\s.*answer refused.*a str, not an object", text.stdout)
    assert "\x1b" not in text.stdout


# What the page shows of one cluster, read in one go: the page redraws itself every refresh,
# so an element found in one call may be gone by the next.
SHOWN = """
const section = document.querySelector(`section[data-cluster="${arguments[0]}"]`);
if (!section) return null;
const all = (where, selector) => [...where.querySelectorAll(selector)];
return {
  drawn: Number(document.body.dataset.drawn),
  injected: document.getElementById("injected") !== null,
  rows: all(section, "table.nodes tbody tr").map((row) => ({
    node: row.dataset.node, text: row.textContent, lagging: row.classList.contains("lagging"),
  })),
  charts: all(section, ".chart").map((chart) => ({
    title: chart.dataset.chart,
    samples: Number(chart.dataset.samples),
    points: all(chart, "polyline").map((line) => line.getAttribute("points")).join(" "),
  })),
  jobs: all(section, "details.job").map((job) => ({
    id: job.dataset.job, open: job.open, text: job.querySelector("summary").textContent,
    logs: Object.fromEntries(
      all(job, "pre[data-log]").map((pre) => [pre.dataset.log, pre.textContent])
    ),
  })),
};
"""


def test_dashboard_in_chromium(cli: Cli, cluster: str) -> None:
    from browser import headless_chromium
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    with busy(cli, cluster, "0,2"), cli.background("dashboard", "--no-browser") as dashboard:
        assert dashboard.stdout is not None
        line = dashboard.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
        assert url is not None, line
        with headless_chromium() as browser:
            browser.get(url.group(0).split("?")[0])
            assert "unauthorized" in browser.find_element(By.TAG_NAME, "body").text
            browser.get_log("browser")  # that refusal's messages, read and dropped
            browser.get(url.group(0))

            def shown() -> dict[str, Any]:
                page: dict[str, Any] = browser.execute_script(SHOWN, cluster) or {}
                return page

            def everyone_answered() -> dict[str, Any] | None:
                page = shown()
                rows = page.get("rows", [])
                return page if len(rows) == 3 and all("%" in row["text"] for row in rows) else None

            page = wait_until(
                everyone_answered, 90, interval=0.5, message=lambda: browser.page_source[:3000]
            )
            assert [row["node"] for row in page["rows"]] == ["node-0", "node-1", "node-2"]
            assert all("running" in row["text"] for row in page["rows"])
            titles = [chart["title"] for chart in page["charts"]]
            assert titles[:2] == ["node-0", "node-1"]
            assert [t for t in titles if "gpu" in t] == [f"node-1 gpu {i}" for i in range(8)]

            def node_0() -> dict[str, Any]:
                return next(c for c in shown()["charts"] if c["title"] == "node-0")

            start = node_0()["samples"]
            wait_until(lambda: node_0()["samples"] >= start + 2, 60, interval=0.5)  # it moves
            assert len(node_0()["points"].split()) >= 2  # a line drawn from the samples
            # node-1 idles while node-0 and node-2 spin: marked as top marks it.
            wait_until(
                lambda: [row["node"] for row in shown()["rows"] if row["lagging"]] == ["node-1"],
                60,
                interval=0.5,
                message=lambda: str(shown()["rows"]),
            )
            job = shown()["jobs"][0]
            assert "succeeded" in job["text"] and "restarts 0" in job["text"]
            assert "step 3 loss 0.3" in job["logs"]["node-0"]
            # A node's output is text on the page, never markup.
            assert "<b id=injected>hi</b>" in job["logs"]["node-0"]
            assert shown()["injected"] is False

            def open_job() -> bool:
                try:
                    browser.find_element(
                        By.CSS_SELECTOR, f'[data-job="{job["id"]}"] summary'
                    ).click()
                except StaleElementReferenceException:  # redrawn meanwhile: click again
                    return False
                return True

            wait_until(open_job, 30, interval=0.2)
            redrawn = shown()["drawn"]
            wait_until(lambda: shown()["drawn"] > redrawn, 30, interval=0.2)
            assert shown()["jobs"][0]["open"]  # a redraw keeps it open
            if SCREENSHOTS:
                browser.save_screenshot(str(Path(SCREENSHOTS) / "dashboard.png"))
            # The token-less visit above also asked for /favicon.ico (the refusal is plain
            # text, which names no icon); the browser may log that 401 any time after.
            favicon_refused = (
                "/favicon.ico - Failed to load resource: the server responded with a status of 401"
            )
            problems = [
                entry["message"]
                for entry in browser.get_log("browser")
                if (entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"])
                and favicon_refused not in entry["message"]
            ]
            assert problems == []  # nothing refused, nothing fetched from elsewhere
        dashboard.send_signal(signal.SIGINT)
        assert dashboard.wait(timeout=60) == 0
