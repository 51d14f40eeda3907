"""The watcher against peers that answer the probe with anything (nodeside/watcher.py, run as
the plain program it is on the head, with a stand-in `ssh` first on PATH answering as a
broken or hostile node would). No answer of a peer may switch the cost guard off: a bad
answer counts as busy, max_hours is decided first whatever the peers say, and no round ends
the watcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import wait_until

from dlvm_cluster.nodeside import watcher

GOOD = '{"jobs": [], "hung": [], "sessions": []}'
HOSTILE = [
    '{"jobs": 1}',
    "[" * 5000,
    "[" * 200_000,
    '{"jobs": [], "hung": [], "sessions": [["nested"]]}',
    '{"jobs": [1], "hung": [], "sessions": []}',
    '{"jobs": [], "hung": []}',
    '"a string"',
    "NaN",
    '{"jobs": ["' + "x" * 5000 + '"], "hung": [], "sessions": []}',
    "",
]


@pytest.mark.parametrize("answer", HOSTILE)
def test_an_answer_other_than_the_probes_is_no_answer(answer: str) -> None:
    assert watcher.peer_report(f"motd from a login script\n{answer}\n") is None


def test_the_probes_own_answer_is_taken() -> None:
    assert watcher.peer_report(f"hello\n{GOOD}\n") == {"jobs": [], "hung": [], "sessions": []}


def _watch(tmp_path: Path, answer: str, **settings: object) -> tuple[subprocess.Popen[str], Path]:
    """`watcher.py supervise CONFIG` (restarting `run` as on a node without systemd), its
    peer answering `answer`; the file its self-stop writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "answer").write_text(answer + "\n")
    ssh = bin_dir / "ssh"
    ssh.write_text(
        f'#!/bin/sh\ncase "$*" in *probe*) cat {tmp_path / "answer"} ;; *) exit 0 ;; esac\n'
    )
    ssh.chmod(0o755)
    stopped = tmp_path / "stopped"
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    config = {
        "idle_seconds": None,
        "max_seconds": None,
        "warn_seconds": 1,
        "action": "stop",
        "interval": 1,
        "started_at": 0,
        "node_dir": str(node_dir),
        "peers": ["node-1"],
        "self_stop": f'echo "$DLVM_STOP_REASON" >> {stopped}',
        **settings,
    }
    folder = tmp_path / "autostop"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-I", watcher.__file__, "supervise", str(folder / "config.json")],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    return process, stopped


def _end(process: subprocess.Popen[str]) -> None:
    """The supervisor and the watcher it started (its own session, made for this test)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("answer", ['{"jobs": 1}', "[" * 5000])
def test_a_hostile_peer_cannot_stop_max_hours(tmp_path: Path, answer: str) -> None:
    process, stopped = _watch(tmp_path, answer, max_seconds=3, idle_seconds=2)
    try:
        wait_until(stopped.exists, 60, message="max_hours never applied")
        assert "max_hours" in stopped.read_text()
        beat_file = tmp_path / "autostop" / "heartbeat.json"
        # Rounds complete (max_hours comes first in a round, the heartbeat at its end).
        beat = wait_until(lambda: (b := json.loads(beat_file.read_text()))["at"] and b, 30)
        assert beat["starts"] == 0
        assert "no answer from node-1" in beat["busy"]  # the bad answer counts as busy
        log = (tmp_path / "autostop" / "watcher.log").read_text()
        assert "Traceback" not in log
    finally:
        _end(process)


def test_an_idle_cluster_whose_peers_answer_rightly_stops(tmp_path: Path) -> None:
    process, stopped = _watch(tmp_path, GOOD, idle_seconds=2)
    try:
        wait_until(stopped.exists, 60, message="an idle cluster was not stopped")
        assert "autostop" in stopped.read_text()
    finally:
        _end(process)


def test_a_config_that_cannot_be_read_keeps_the_last_one(tmp_path: Path) -> None:
    process, _ = _watch(tmp_path, GOOD)
    try:
        beat_file = tmp_path / "autostop" / "heartbeat.json"
        wait_until(lambda: beat_file.exists() and json.loads(beat_file.read_text())["at"], 30)
        (tmp_path / "autostop" / "config.json").write_text("[" * 100_000)
        at = json.loads(beat_file.read_text())["at"]
        wait_until(lambda: json.loads(beat_file.read_text())["at"] > at + 1, 30)
        assert json.loads(beat_file.read_text())["starts"] == 0  # still the same watcher
    finally:
        _end(process)
