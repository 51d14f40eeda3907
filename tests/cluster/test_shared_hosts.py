"""Two clusters on the same machines (the ssh provider on the nodes of a local cluster) keep
their files apart on the nodes: each its own secrets and setup stamp, and `down` of one
leaves the other's alone."""

from __future__ import annotations

from pathlib import Path

from harness import Cli, unique_name, write_spec, write_ssh_spec_on

BASE_SECRET = "base-secret-value-1"
OTHER_SECRET = "other-secret-value-2"
SEES = 'echo "base=${BASE_SECRET:-unset} other=${OTHER_SECRET:-unset}"'
ONLY_BASE = ["[node-0] base=*** other=unset", "[node-1] base=*** other=unset"]
ONLY_OTHER = ["[node-0] base=unset other=***", "[node-1] base=unset other=***"]


def test_clusters_sharing_machines_keep_their_own_files(cli: Cli, tmp_path: Path) -> None:
    base = unique_name("base")
    cli.run(
        "up",
        str(
            write_spec(
                tmp_path,
                base,
                2,
                f"env:\n  BASE_SECRET: {{value: {BASE_SECRET}, secret: true}}\n"
                "setup: echo base >> ~/base-setup\n",
            )
        ),
        check=True,
    )
    try:
        other = unique_name("other")
        spec = write_ssh_spec_on(
            cli,
            base,
            tmp_path,
            other,
            f"env:\n  OTHER_SECRET: {{value: {OTHER_SECRET}, secret: true}}\n"
            "setup: echo other >> ~/other-setup\n",
        )
        cli.run("up", str(spec), "--yes", check=True)  # trusts the hosts it is shown
        # Each cluster's commands see its own secret only.
        seen = cli.run("exec", base, "--", SEES, check=True).stdout
        assert sorted(seen.splitlines()) == ONLY_BASE
        seen = cli.run("exec", other, "--", SEES, check=True).stdout
        assert sorted(seen.splitlines()) == ONLY_OTHER
        cli.run("down", other, "--yes", check=True)
        left = cli.run(
            "exec",
            base,
            "--",
            f"cd ~/.dlvm/node-files && ls {base}; ls -d {other} 2>&1 | grep -c 'No such'",
            check=True,
        )
        assert left.stdout.split().count("secrets.env") == 2
        assert left.stdout.split().count("setup.sha256") == 2
        assert left.stdout.split().count("1") == 2  # the other cluster's folder is gone
        seen = cli.run("exec", base, "--", SEES, check=True).stdout
        assert sorted(seen.splitlines()) == ONLY_BASE
    finally:
        cli.run("down", base, "--yes", check=True)
