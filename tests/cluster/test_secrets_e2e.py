"""Secret env values reach the processes on the nodes, and nothing else: not dlvm's output,
logs, status, plan or render, and not the process list of the nodes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from harness import Cli, unique_name
from system import processes_mentioning, sleep_marker, wait_for_processes

TOKEN = "tok-" + hashlib.sha256(b"dlvm secret test").hexdigest()[:24]
LITERAL = "lit-" + hashlib.sha256(b"dlvm literal").hexdigest()[:24]


def _machine_processes() -> str:
    return subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout


def test_secrets_reach_processes_and_nothing_else(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("se")
    spec = tmp_path / "secret.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: 2}}\n"
        "env:\n  PLAIN: visible\n  TOKEN: {from_env: DLVM_TEST_TOKEN}\n"
        f"  LITERAL: {{value: {LITERAL}, secret: true}}\n"
        'setup: echo "setup sees $TOKEN" && echo run >> ~/setup-runs\n'
        "job: {framework: none, command: 'echo job $TOKEN $LITERAL'}\n"
    )
    env = {**cli.env(), "DLVM_TEST_TOKEN": TOKEN}
    missing = cli.run("up", str(spec))
    assert missing.returncode == 2 and "DLVM_TEST_TOKEN, which is not set" in missing.stderr

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dlvm_cluster", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    outputs = []
    try:
        up = run("up", str(spec))
        assert up.returncode == 0, up.stderr
        outputs.append(up.stdout + up.stderr)
        assert "setup sees ***" in up.stdout
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        check = run("exec", name, "--", 'printf %s "$TOKEN" | sha256sum; echo $PLAIN $LITERAL')
        assert check.returncode == 0, check.stderr
        outputs.append(check.stdout + check.stderr)
        assert check.stdout.count(digest) == 2
        assert check.stdout.count("visible ***") == 2
        # While a command runs, no process on the machine shows a secret on its command line:
        # the listing is taken once the command runs on both nodes (polled, however slow the
        # machine), then its sleeps are ended so that it finishes.
        marker = sleep_marker(617)
        with cli.background(
            "exec", name, "--", f"{marker}; echo $TOKEN", DLVM_TEST_TOKEN=TOKEN
        ) as slow:
            sleeping = wait_for_processes(marker, 2, timeout=120)
            listing = _machine_processes()
            for line in processes_mentioning(marker):
                if line.split()[2:] == marker.split():  # the sleeps, not their shells
                    os.kill(int(line.split()[0]), signal.SIGTERM)
            out, err = slow.communicate(timeout=120)
        outputs.append(out + err)
        assert len(sleeping) >= 2 and marker in listing
        assert TOKEN not in listing and LITERAL not in listing
        job = run("launch", name)
        assert job.returncode == 0, job.stderr
        outputs.append(job.stdout + job.stderr)
        assert "job *** ***" in job.stdout
        for args in (("status", name, "--json"), ("logs", name), ("plan", str(spec))):
            result = run(*args)
            outputs.append(result.stdout + result.stderr)
        rendered = tmp_path / "rendered"
        outputs.append(run("render", str(spec), "-o", str(rendered)).stdout)
        outputs += [p.read_text() for p in rendered.iterdir() if p.is_file()]
        logs = cli.home / "clusters" / name / "logs"
        outputs += [p.read_text() for p in logs.rglob("*") if p.is_file()]
        for text in outputs:
            assert TOKEN not in text and LITERAL not in text
        # A new secret value makes setup run again.
        env["DLVM_TEST_TOKEN"] = TOKEN + "-rotated"
        assert run("up", str(spec)).returncode == 0
        runs = run("exec", name, "--", "wc -l < ~/setup-runs")
        assert runs.stdout.split()[1::2] == ["2", "2"]
        mode = run("exec", name, "--", f"stat -c %a ~/.dlvm/node-files/{name}/secrets.env")
        assert mode.stdout.split()[1::2] == ["600", "600"]
    finally:
        run("down", name, "--yes")
