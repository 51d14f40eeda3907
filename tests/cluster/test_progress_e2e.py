"""Progress per node on a real 2-node `up` whose stderr is not a terminal: its log shows the
counted readiness and setup steps, and a failed setup names its node."""

from __future__ import annotations

from pathlib import Path

from harness import Cli, unique_name, write_spec


def test_up_log_shows_readiness_and_setup_counts(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("pg")
    setup = 'setup: |\n  if [ -e ~/fail ]; then echo bad; exit 3; fi; echo "set up $(hostname)"\n'
    spec = write_spec(tmp_path, name, 2, setup)
    try:
        result = cli.run("up", str(spec), check=True)
        log = result.stderr.splitlines()
        assert "==> waiting for SSH" in log
        assert any(line.startswith("  ✓ waiting for SSH: 2/2 nodes (") for line in log), log
        for rank in range(2):
            assert any(line.startswith(f"  ✓ node-{rank} setup (") for line in log), log
        assert any(line.startswith("  ✓ setup: 2/2 nodes (") for line in log), log
        assert not any(": 1/2 nodes" in line for line in log)  # no intermediate counts in logs
        assert f"cluster {name} is up: 2 node(s), setup ran on 2 in " in result.stdout
        assert "[node-1] set up node-1" in result.stdout

        cli.run("exec", name, "--nodes", "1", "--", "touch ~/fail", check=True)
        failed = cli.run("up", str(spec), "--rerun-setup")
        assert failed.returncode == 1, failed.stderr
        log = failed.stderr.splitlines()
        assert any(line.startswith("  ✗ node-1 setup failed: exit 3 (") for line in log), log
        assert not any("✓ setup: " in line for line in log), log
        assert "error: setup failed on node-1 (exit 3): bad" in failed.stderr
        assert "__dlvm_setup_done__" not in failed.stderr + failed.stdout
    finally:
        cli.run("down", name, "--yes")
