"""The Horovod source this machine fetches for a head that cannot reach the package index:
kept in the cache once fetched; a fetch that fails here says so and leaves the head to try."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlvm_cluster.orchestrate.cluster.horovod import fetch_source, horovod_version
from dlvm_cluster.progress import SilentProgress


class Notes(SilentProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_the_pinned_version_is_the_build_scripts() -> None:
    assert horovod_version() == "0.28.1"


def test_a_cached_archive_is_used_without_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a fetch would fail
    cached = tmp_path / "dlvm" / "sources" / "horovod-0.28.1.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"archive")
    assert fetch_source(Notes()) == cached


def test_a_fetch_that_fails_here_leaves_it_to_the_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    progress = Notes()
    assert fetch_source(progress) is None
    assert progress.notes and "could not fetch the source here" in progress.notes[0]
    assert "the head tries" in progress.notes[0]
    assert not (tmp_path / "dlvm" / "sources").exists() or not any(
        (tmp_path / "dlvm" / "sources").iterdir()
    )
