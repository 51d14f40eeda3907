"""What this machine sends for Horovod: the pins come from its own copy of the build script;
a node's `needs` answer is taken apart as hostile (nothing of it reaches a path or a pip
argument unchecked); a cached wheel or source archive is sent only with the hash it must
have."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from hostile_sdist import marking_sdist

from dlvm_cluster.launch.frameworks import HOROVOD_SETUP
from dlvm_cluster.orchestrate.cluster import framework_supply
from dlvm_cluster.orchestrate.cluster.framework_supply import (
    Pins,
    cached_wheel,
    parse_needs,
    pins,
    source_archive,
)
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.remote.node_json import NodeJsonError

PINNED = pins(HOROVOD_SETUP)
FOLDER = "horovod-0.28.1-torch2.13.0_cpu-cp311-linux_x86_64-gloo"


class Notes(SilentProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _answer(**changes: object) -> str:
    answer: dict[str, object] = {
        "wheel": False,
        "problem": "",
        "accepts": [FOLDER],
        "missing": ["cffi==2.1.1"],
        "python": "3.11",
        "abi": "cp311",
        "platforms": ["manylinux_2_17_x86_64", "linux_x86_64", "any"],
    }
    answer.update(changes)
    return json.dumps(answer)


def test_the_pins_are_the_build_scripts() -> None:
    script = (
        Path(framework_supply.__file__).parents[2] / "nodeside" / "build_horovod.sh"
    ).read_text()
    assert PINNED.package == "horovod" and PINNED.version == "0.28.1"
    assert f"HOROVOD_SOURCE_SHA256={PINNED.source_sha256}\n" in script
    assert re.fullmatch(r"[0-9a-f]{64}", PINNED.source_sha256)
    assert "cffi==2.1.1" in PINNED.dependencies and all("==" in d for d in PINNED.dependencies)
    assert PINNED.source_name == "horovod-0.28.1.tar.gz"


def test_a_plain_answer_is_read() -> None:
    needs = parse_needs(_answer(), PINNED)
    assert needs.accepts == (FOLDER,) and needs.missing == ("cffi==2.1.1",)
    assert needs.platforms[-1] == "any" and not needs.has_wheel


def test_a_dependency_that_is_not_pinned_is_never_fetched() -> None:
    answer = _answer(missing=["cffi==2.1.1", "--index-url=http://elsewhere", "evil==6.6.6"])
    assert parse_needs(answer, PINNED).missing == ("cffi==2.1.1",)


@pytest.mark.parametrize(
    "changes",
    [
        {"accepts": ["../../../etc"]},
        {"accepts": ["horovod-0.28.1-../../x"]},
        {"accepts": ["other-1.0-gloo"]},
        {"platforms": ["linux_x86_64 --index-url http://elsewhere"]},
        {"platforms": ["--pre"]},
        {"python": "3.11; rm -rf /"},
        {"abi": "cp27"},
        {"wheel": "yes"},
        {"accepts": "horovod-0.28.1-x"},
    ],
)
def test_a_hostile_answer_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(NodeJsonError):
        parse_needs(_answer(**changes), PINNED)


def test_a_garbled_answer_is_refused() -> None:
    for text in ["", "[" * 5000, '{"wheel": NaN}', "not json"]:
        with pytest.raises(NodeJsonError):
            parse_needs(text, PINNED)


def _wheel(cache: Path, folder: str, content: bytes, recorded: str | None = None) -> Path:
    wheel = cache / "dlvm" / "wheels" / folder / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(content)
    digest = recorded or hashlib.sha256(content).hexdigest()
    (wheel.parent / (wheel.name + ".sha256")).write_text(digest + "\n")
    return wheel


def test_only_a_wheel_with_its_recorded_hash_for_a_taken_folder_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    other = FOLDER.replace("gloo", "mpi")
    _wheel(tmp_path, other, b"a wheel for a folder the node does not take")
    progress = Notes()
    assert cached_wheel(PINNED, [FOLDER], progress) is None
    changed = _wheel(tmp_path, FOLDER, b"changed after its build", recorded="3" * 64)
    assert cached_wheel(PINNED, [FOLDER], progress) is None
    assert progress.notes and str(changed) in progress.notes[0]
    assert cached_wheel(PINNED, [FOLDER, other], progress) == (
        changed.parent.parent / other / changed.name,
        hashlib.sha256(b"a wheel for a folder the node does not take").hexdigest(),
    )


def test_a_cached_source_that_is_not_the_published_one_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "dlvm" / "sources" / "horovod-0.28.1.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"changed in the cache")
    fetches: list[list[str]] = []

    def pip_serving(content: bytes) -> object:
        def pip(arguments: list[str]) -> str:
            fetches.append(arguments)
            folder = Path(arguments[arguments.index("-d") + 1])
            (folder / "horovod-0.28.1.tar.gz").write_bytes(content)
            return ""

        return pip

    # What an index (or a proxy) that lies serves is neither kept nor sent.
    monkeypatch.setattr(framework_supply, "_pip", pip_serving(b"served by a liar"))
    progress = Notes()
    assert source_archive(PINNED, progress) is None
    assert not cached.exists()
    assert "--no-binary" in fetches[-1] and "--require-hashes" in fetches[-1]
    assert any("not the published source" in note for note in progress.notes)
    assert any("does not have the pinned SHA-256" in note for note in progress.notes)
    # The published content (here: what the pin is made to be) is kept, and used from then on.
    published = b"the published archive"
    pinned = Pins("horovod", "0.28.1", hashlib.sha256(published).hexdigest(), ())
    monkeypatch.setattr(framework_supply, "_pip", pip_serving(published))
    assert source_archive(pinned, progress) == cached and cached.read_bytes() == published
    count = len(fetches)
    assert source_archive(pinned, progress) == cached and len(fetches) == count


def test_a_source_that_cannot_be_fetched_here_leaves_the_head_to_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real pip, with no index and nothing to find: it fails, and that is said."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    (tmp_path / "nothing").mkdir()
    progress = Notes()
    assert source_archive(PINNED, progress) is None
    assert progress.notes and "cannot fetch its source here" in progress.notes[-1]
    assert not (tmp_path / "dlvm" / "sources" / "horovod-0.28.1.tar.gz").exists()


def test_a_source_with_another_hash_never_runs_its_code_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real pip, an index (a local folder) serving an archive whose build code leaves a mark:
    pip prepares an archive's metadata, running that code, unless it checks the hash first."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    mark = tmp_path / "its-code-ran"
    marking_sdist(tmp_path / "index", "horovod", "0.28.1", mark)
    progress = Notes()
    assert source_archive(PINNED, progress) is None
    assert not mark.exists()
    assert "cannot fetch its source here" in progress.notes[-1]
