"""The ssh provider on machines that already exist: here, the nodes of a local cluster."""

from __future__ import annotations

import json
from pathlib import Path

from harness import Cli, unique_name, write_spec, write_ssh_spec_on


def test_existing_machines_get_the_same_commands(cli: Cli, tmp_path: Path) -> None:
    base = unique_name("host")
    cli.run("up", str(write_spec(tmp_path, base, 2)), check=True)
    try:
        name = unique_name("ex")
        spec = write_ssh_spec_on(
            cli,
            base,
            tmp_path,
            name,
            "env: {ROLE: worker}\nsetup: echo set >> ~/ssh-setup\n",
        )
        # Keys the file does not give are not trusted without asking; nothing is stored or
        # sent to the machines until they are.
        refused = cli.run("up", str(spec))
        assert refused.returncode == 2, refused.stderr
        assert "not trusted without asking" in refused.stderr
        assert refused.stderr.count("SHA256:") == 2 and "--yes" in refused.stderr
        assert not (cli.home / "clusters" / name / "inventory.json").exists()
        untouched = cli.run(
            "exec", base, "--", f"grep -c 'dlvm-{name}' ~/.ssh/authorized_keys || true", check=True
        )
        assert sorted(untouched.stdout.split()) == ["0", "0", "[node-0]", "[node-1]"]
        first = cli.run("up", str(spec), "--yes", check=True)
        assert first.stderr.count("accepted on first contact") == 2
        assert "SHA256:" in first.stderr
        result = cli.run(
            "exec",
            name,
            "--",
            "echo $DLVM_NODE_RANK $ROLE $(hostname); ssh node-1 hostname",
            check=True,
        )
        assert sorted(result.stdout.splitlines()) == [
            "[node-0] 0 worker node-0",
            "[node-0] node-1",
            "[node-1] 1 worker node-1",
            "[node-1] node-1",
        ]
        again = cli.run("up", str(spec), check=True)
        assert "pinned" not in again.stderr and "nothing to do" in again.stdout
        # A machine whose key changes after pinning is refused.
        inventory = cli.home / "clusters" / name / "inventory.json"
        original = inventory.read_text()
        data = json.loads(original)
        data["nodes"][1]["host_key"] = data["nodes"][0]["host_key"]
        inventory.write_text(json.dumps(data))
        changed = cli.run("exec", name, "--", "true")
        assert changed.returncode == 1 and "HOST KEY CHANGED" in changed.stderr
        inventory.write_text(original)
        cli.run("down", name, "--yes", check=True)
        assert not (cli.home / "clusters" / name).exists()
        # The machines are still there, and what dlvm put on them is gone.
        left = cli.run(
            "exec",
            base,
            "--",
            f"grep -c {name} ~/.ssh/config ~/.ssh/authorized_keys || true",
            check=True,
        )
        assert ":0" in left.stdout and ":1" not in left.stdout
    finally:
        cli.run("down", base, "--yes", check=True)
