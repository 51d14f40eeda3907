"""Without root the local provider refuses plainly; checked with the euid faked, so this
runs in the unit tier (the real local clusters: tests/cluster/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import unique_name, write_spec


def test_not_root_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without root the local provider stops with a message and exit 3, not a traceback."""
    import os

    from dlvm_cluster.cli.app import main

    spec = write_spec(tmp_path, unique_name("nr"), 1)
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr("sys.argv", ["dlvm", "up", str(spec)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "needs root" in err
    assert "Traceback" not in err
    assert not (tmp_path / "home" / "clusters").exists()
