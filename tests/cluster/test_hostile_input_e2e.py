"""Hostile input on real nodes (cluster3's: node-0 also serves as a machine that already
exists for the ssh provider): a node's escape sequences reach the terminal shown, never
obeyed (exec cold and warm, a failed setup's error), while --json keeps the exact bytes; and
the ssh provider's `dlvm ssh` / `ssh-config` reach machines with the file's identity_file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness import Cli, unique_name, write_spec

HOSTILE = r"printf 'a\033]52;c;aGk=\007b\r[node-9] posing\n'"
SHOWN = "[node-0] a\\x1b]52;c;aGk=\\x07b\\r[node-9] posing\n"
EXACT = "a\x1b]52;c;aGk=\x07b\r[node-9] posing"


def test_node_output_is_shown_escaped_and_exact_in_json(
    cli: Cli, cluster3: tuple[str, Path]
) -> None:
    name, _ = cluster3
    for _ in range(2):  # over new connections, then through the agent they started
        result = cli.run("exec", name, "--nodes", "0", "--", HOSTILE, check=True)
        assert result.stdout == SHOWN
    document = cli.run("exec", name, "--nodes", "0", "--json", "--", HOSTILE, check=True)
    data = json.loads(document.stdout)  # the document alone: nothing after it
    assert data["nodes"][0]["tail"] == [EXACT]
    assert "\x1b" not in document.stdout and "\x1b" not in document.stderr


def test_ssh_and_ssh_config_use_the_identity_file(
    cli: Cli, cluster3: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = cluster3
    ip = cli.status(base)["nodes"][0]["ip"]  # type: ignore[index]
    key = cli.home / "clusters" / base / "ssh" / "id_ed25519"
    name = unique_name("hxs")
    spec = tmp_path / "existing.yaml"
    spec.write_text(
        f"name: {name}\nprovider:\n  kind: ssh\n  identity_file: {key}\n"
        f"  hosts:\n    - {{host: {ip}, user: root}}\nnodes: {{count: 1}}\n"
    )
    cli.run("up", str(spec), "--yes", check=True)  # trusts the key it is shown
    try:
        config = tmp_path / "ssh_config"
        config.write_text(cli.run("ssh-config", name, check=True).stdout)
        assert f"IdentityFile {key}\n" in config.read_text()
        plain = subprocess.run(
            ["ssh", "-F", str(config), f"{name}-node-0", "hostname"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert plain.returncode == 0, plain.stderr
        assert plain.stdout.strip() == "node-0"
        shell = cli.run("ssh", name, "0", input="hostname\nexit\n", timeout=30)
        assert shell.returncode == 0, shell.stderr
        assert "node-0" in shell.stdout
    finally:
        cli.run("down", name, "--yes", check=True)


def test_a_failed_setups_last_lines_are_shown_escaped(
    cli: Cli, cluster3: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = cluster3
    spec = write_spec(tmp_path, name, 3, f"setup: |\n  {HOSTILE}\n  exit 3\n")
    result = cli.run("up", str(spec))
    assert result.returncode == 1, result.stderr
    assert "setup failed on node-0" in result.stderr
    assert "a\\x1b]52;c;aGk=\\x07b\\r[node-9] posing" in result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
