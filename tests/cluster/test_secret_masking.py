"""A `from_env` secret is masked in node output even when the variable is not set in the shell
that runs dlvm: the nodes still hold the value, so dlvm masks with what they hold."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from harness import Cli, openssh_private_key, unique_name, wait_until, write_spec

from dlvm_cluster.remote import agent_client

VALUE = "held-" + hashlib.sha256(b"dlvm held secret").hexdigest()[:20]
VARIABLE = "DLVM_TEST_HELD_SECRET"
OTHER_VALUE = "other-" + hashlib.sha256(b"dlvm other secret").hexdigest()[:20]
OTHER_VARIABLE = "DLVM_TEST_OTHER_SECRET"
PEM = openssh_private_key()
PEM_LINES = PEM.splitlines()
PEM_VARIABLE = "DLVM_TEST_PEM_SECRET"


def _dlvm(cli: Cli, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """dlvm ARGS with the secret's variable unset, unless `extra` sets it."""
    unset = (VARIABLE, OTHER_VARIABLE, PEM_VARIABLE)
    env = {k: v for k, v in cli.env().items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", *args],
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=300,
    )


def _agent_served(state_dir: Path) -> int:
    """Commands the cluster's agent has served (waiting for one to answer)."""
    answer = wait_until(lambda: agent_client.ping(state_dir), 30, message="no agent answers")
    return int(answer["served"])


def test_exec_and_logs_mask_a_secret_the_shell_no_longer_has(cli: Cli, tmp_path: Path) -> None:
    assert VARIABLE not in os.environ
    name = unique_name("mask")
    spec = write_spec(
        tmp_path,
        name,
        2,
        f"env:\n  SECRET: {{from_env: {VARIABLE}}}\n  PEM: {{from_env: {PEM_VARIABLE}}}\n"
        'job: {framework: none, command: \'echo job $SECRET; printf "%s\\n" "$PEM"\'}\n',
    )
    try:
        up = _dlvm(cli, "up", str(spec), **{VARIABLE: VALUE, PEM_VARIABLE: PEM})
        assert up.returncode == 0, up.stderr
        job = _dlvm(cli, "launch", name, **{VARIABLE: VALUE, PEM_VARIABLE: PEM})
        assert job.returncode == 0, job.stderr
        assert job.stdout.count("job ***") == 2
        assert job.stdout.count("***") == 2 + 2 * len(PEM_LINES), job.stdout  # the key, by line
        shown = []

        def exec_masked(**extra: str) -> None:
            result = _dlvm(cli, "exec", name, "--", "echo exec $SECRET", **extra)
            assert result.returncode == 0, result.stderr
            assert result.stdout.count("exec ***") == 2, result.stdout
            shown.append(result.stdout + result.stderr)

        exec_masked(DLVM_NO_AGENT="1")  # over new connections
        exec_masked()  # over new connections, then starts the cluster's agent
        state_dir = cli.home / "clusters" / name
        served = _agent_served(state_dir)
        exec_masked()  # through the agent
        assert _agent_served(state_dir) > served, "the agent did not serve the last exec"
        logs = _dlvm(cli, "logs", name)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.count("job ***") == 2, logs.stdout
        shown.append(logs.stdout + logs.stderr)
        # `launch FILE` installs a secret the applied spec does not name: masked all the same.
        other = tmp_path / "other.yaml"
        other.write_text(
            spec.read_text().replace("env:\n", f"env:\n  OTHER: {{from_env: {OTHER_VARIABLE}}}\n")
        )
        added = _dlvm(
            cli,
            "launch",
            str(other),
            **{VARIABLE: VALUE, PEM_VARIABLE: PEM, OTHER_VARIABLE: OTHER_VALUE},
        )
        assert added.returncode == 0, added.stderr
        result = _dlvm(cli, "exec", name, "--", "echo other $OTHER")
        assert result.stdout.count("other ***") == 2, result.stdout
        shown.append(result.stdout + result.stderr)
        # A multi-line secret printed alone, line by line, and as JSON; and a failing setup's
        # tail, shown by `up`.
        alone = _dlvm(
            cli,
            "exec",
            name,
            "--",
            'echo "$PEM" | sed -n 2p; python3 -c '
            "\"import json,os; print(json.dumps(os.environ['PEM']))\"",
        )
        assert alone.returncode == 0 and alone.stdout.count("***") >= 4, alone.stdout
        shown.append(alone.stdout + alone.stderr)
        failing = spec.read_text() + 'setup: \'printf "%s\\n" "$PEM" >&2; exit 3\'\n'
        spec.write_text(failing)
        broken = _dlvm(cli, "up", str(spec), "--json", **{VARIABLE: VALUE, PEM_VARIABLE: PEM})
        assert broken.returncode != 0 and "***" in broken.stdout + broken.stderr, broken
        shown.append(broken.stdout + broken.stderr)
        kept = cli.home / "clusters" / name / "logs"
        shown += [path.read_text() for path in kept.rglob("*") if path.is_file()]
        for text in shown:
            assert VALUE not in text and OTHER_VALUE not in text
            for line in PEM_LINES:
                assert line not in text, text
    finally:
        _dlvm(cli, "down", name, "--yes")
