"""The Horovod build recipe refuses up front, naming what is missing, and leaves nothing.

Each case runs the real script with a PATH that lacks one tool (a folder of links to the
real ones it keeps): without the checks it would download the source and fail minutes later,
half way into CMake. The cache folder must stay empty: a wheel appears there only once a
build succeeded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO
from hostile_sdist import marking_sdist

SCRIPT = REPO / "dlvm_cluster" / "nodeside" / "build_horovod.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _run(tmp_path: Path, tools: list[str], python: str = sys.executable, **env: str) -> str:
    """The script's stderr, run with only `tools` on PATH; asserts it failed and cached
    nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ["head", *tools]:
        found = shutil.which(tool)
        assert found, f"this machine has no {tool}"
        (bin_dir / tool).symlink_to(found)
    cache = tmp_path / "cache"
    result = subprocess.run(
        [BASH, str(SCRIPT), "wheel"],
        env={
            "PATH": str(bin_dir),
            "HOME": str(tmp_path),
            "PYTHON": python,
            "XDG_CACHE_HOME": str(cache),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert not cache.exists() or not any(cache.iterdir())
    assert "fetching" not in result.stdout  # refused before downloading anything
    return result.stderr


@pytest.mark.parametrize(
    ("tools", "named"),
    [
        ([], "no C++ compiler (g++)"),
        (["g++"], "no cmake"),
        (["g++", "cmake"], "no make"),
    ],
)
def test_names_the_missing_tool(tmp_path: Path, tools: list[str], named: str) -> None:
    assert named in _run(tmp_path, tools)


def test_a_cmake_horovod_would_replace_from_the_index_is_named(tmp_path: Path) -> None:
    """Horovod's setup.py fetches a CMake of its own when the one found is older than 3.13."""
    (tmp_path / "bin").mkdir()
    old_cmake = tmp_path / "bin" / "cmake"
    old_cmake.write_text("#!/bin/sh\necho 'cmake version 3.10.2'\n")
    old_cmake.chmod(0o755)
    assert "cmake is older than 3.13" in _run(tmp_path, ["g++", "make"])


def test_mpi_required_but_absent_is_named(tmp_path: Path) -> None:
    stderr = _run(tmp_path, ["g++", "cmake", "make"], HOROVOD_WITH_MPI="1")
    assert "no mpicxx" in stderr


def test_python_without_torch_is_named(tmp_path: Path) -> None:
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    stderr = _run(tmp_path, ["g++", "cmake", "make"], python=str(env / "bin" / "python"))
    assert "cannot import torch" in stderr


def test_unknown_mode_is_refused() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "build"], capture_output=True, text=True, env=dict(os.environ)
    )
    assert (
        result.returncode == 2
        and "usage: build_horovod.sh wheel|install|install-wheel" in result.stderr
    )


# -- what is downloaded or cached is checked before it is used ----------------------------

SOURCE_SHA256 = "92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0"


def _python_serving(tmp_path: Path, payload: bytes) -> Path:
    """The real Python, except that `-m pip download ... -d DIR` writes `payload` as the
    source archive into DIR (what an index or a proxy that lies would serve), and any other
    `pip install` or `pip wheel` is recorded in pip.log instead of run."""
    (tmp_path / "payload").write_bytes(payload)
    stand_in = tmp_path / "python"
    stand_in.write_text(
        "#!/bin/bash\n"
        'if [[ "$1 $2" == "-m pip" && "$3" =~ ^(download|install|wheel)$ ]]; then\n'
        f'  echo "$*" >> {tmp_path}/pip.log\n'
        '  if [[ "$3" == download ]]; then\n'
        '    while [[ $# -gt 0 && "$1" != -d ]]; do shift; done\n'
        f'    cp {tmp_path}/payload "$2/horovod-0.28.1.tar.gz"\n'
        "  fi\n"
        "  exit 0\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    stand_in.chmod(0o755)
    return stand_in


def _script(
    tmp_path: Path, *args: str, python: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The script run with `args`, its cache under tmp_path; `env` adds to the environment."""
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "PYTHON": str(python),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not all(map(shutil.which, ["g++", "cmake", "make"])), reason="no build tools")
def test_a_source_that_is_not_the_published_one_is_never_unpacked(tmp_path: Path) -> None:
    python = _python_serving(tmp_path, b"not horovod's source")
    result = _script(tmp_path, "wheel", python=python)
    assert result.returncode == 1, result.stdout + result.stderr
    got = hashlib.sha256(b"not horovod's source").hexdigest()
    assert f"expected {SOURCE_SHA256}, got {got}" in result.stderr
    assert "building" not in result.stdout
    assert " wheel " not in (tmp_path / "pip.log").read_text()  # its build code never ran
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.whl"))


@pytest.mark.skipif(not all(map(shutil.which, ["g++", "cmake", "make"])), reason="no build tools")
def test_a_source_with_another_hash_never_runs_its_code(tmp_path: Path) -> None:
    """Real pip, an index (a local folder) serving an archive whose build code leaves a mark."""
    mark = tmp_path / "its-code-ran"
    marking_sdist(tmp_path / "index", "horovod", "0.28.1", mark)
    result = _script(
        tmp_path,
        "wheel",
        python=Path(sys.executable),
        PIP_CONFIG_FILE="/dev/null",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(tmp_path / "index"),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "could not download the horovod 0.28.1 source" in result.stderr
    assert not mark.exists()


def _cached_wheel(tmp_path: Path, python: Path, recorded: str) -> Path:
    """A wheel in the cache folder the script looks in, with `recorded` as its hash."""
    about = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig, torch; "
            "print(torch.__version__.replace('+', '_'), f'cp{sys.version_info[0]}"
            "{sys.version_info[1]}', sysconfig.get_platform().replace('-', '_')"
            ".replace('.', '_'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    folder = tmp_path / "cache" / "dlvm" / "wheels"
    folder /= f"horovod-0.28.1-torch{about[0]}-{about[1]}-{about[2]}-gloo"
    folder.mkdir(parents=True)
    wheel = folder / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"a wheel changed after it was built")
    (folder / (wheel.name + ".sha256")).write_text(recorded + "\n")
    return wheel


def test_a_cached_wheel_changed_since_its_build_is_not_used(tmp_path: Path) -> None:
    python = _python_serving(tmp_path, b"")
    wheel = _cached_wheel(tmp_path, python, "0" * 64)
    result = _script(tmp_path, "install", python=python)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not match its recorded SHA-256: expected " + "0" * 64 in result.stderr
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in result.stderr
    assert not (tmp_path / "pip.log").exists()  # nothing installed


def test_a_node_installs_only_the_wheel_the_head_built(tmp_path: Path) -> None:
    python = _python_serving(tmp_path, b"")
    wheel = tmp_path / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"the wheel as it arrived")
    result = _script(tmp_path, "install-wheel", str(wheel), "1" * 64, python=python)
    assert result.returncode == 1 and "expected " + "1" * 64 in result.stderr
    assert not (tmp_path / "pip.log").exists()
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    result = _script(tmp_path, "install-wheel", str(wheel), good, python=python)
    installs = (tmp_path / "pip.log").read_text().splitlines()
    # Dependencies the Python lacks at pinned versions only, then the wheel without its own.
    assert installs[-1] == f"-m pip install -q --no-deps {wheel}"
    assert all("==" in word for line in installs[:-1] for word in line.split()[4:])


# -- what dlvm sends from where it runs, for a node that cannot reach the index ------------


def _lacking_dependencies(tmp_path: Path) -> Path:
    """`_python_serving`, except that every pinned dependency is missing from it."""
    python = _python_serving(tmp_path, b"")
    text = python.read_text().replace(
        "fi\nexec",
        'fi\nif [[ "$1" == -c && "$2" == *m.version* ]]; then exit 1; fi\nexec',
    )
    python.write_text(text)
    return python


@pytest.mark.torch  # the script reads what it would build against from torch
def test_needs_says_what_would_help_and_does_nothing(tmp_path: Path) -> None:
    python = _lacking_dependencies(tmp_path)
    result = _script(tmp_path, "needs", python=python, CXX="no-such-c++")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert line.startswith("DLVM_HOROVOD_NEEDS=")
    needs = json.loads(line.removeprefix("DLVM_HOROVOD_NEEDS="))
    assert needs["wheel"] is False
    assert needs["problem"].startswith("no C++ compiler (no-such-c++)")
    assert needs["accepts"] and all(f.startswith("horovod-0.28.1-torch") for f in needs["accepts"])
    assert "cffi==2.1.1" in needs["missing"] and "cloudpickle==3.1.1" in needs["missing"]
    assert needs["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert "any" in needs["platforms"]
    assert not (tmp_path / "pip.log").exists() and not (tmp_path / "cache").exists()


@pytest.mark.torch
@pytest.mark.skipif(not all(map(shutil.which, ["g++", "cmake", "make"])), reason="no build tools")
def test_a_source_sent_that_is_not_the_published_one_is_never_unpacked(tmp_path: Path) -> None:
    sent = tmp_path / "sent" / "horovod-0.28.1.tar.gz"
    sent.parent.mkdir()
    sent.write_bytes(b"not horovod's source either")
    python = _python_serving(tmp_path, b"")
    result = _script(tmp_path, "wheel", python=python, HOROVOD_SDIST=str(sent))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "using the horovod 0.28.1 source sent with the build" in result.stdout
    got = hashlib.sha256(sent.read_bytes()).hexdigest()
    assert f"expected {SOURCE_SHA256}, got {got}" in result.stderr
    assert "fetching" not in result.stdout
    assert not (tmp_path / "pip.log").exists()  # neither fetched nor built


def _sent_wheel(tmp_path: Path, folder: str) -> Path:
    """A wheel as dlvm sends it: in a folder named as the cache names the combination."""
    wheel = tmp_path / "supply" / folder / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"a wheel built elsewhere")
    return wheel


@pytest.mark.torch
def test_a_wheel_sent_is_checked_then_cached_and_installed_with_sent_dependencies(
    tmp_path: Path,
) -> None:
    python = _lacking_dependencies(tmp_path)
    taken = _cached_wheel(tmp_path / "probe", python, "0" * 64).parent.name  # gloo: it takes
    wheel = _sent_wheel(tmp_path, taken)
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    house = tmp_path / "house"
    house.mkdir()

    def run(sha256: str) -> subprocess.CompletedProcess[str]:
        return _script(
            tmp_path,
            "install",
            python=python,
            HOROVOD_WITHOUT_MPI="1",
            HOROVOD_WHEEL=str(wheel),
            HOROVOD_WHEEL_SHA256=sha256,
            HOROVOD_WHEELHOUSE=str(house),
        )

    refused = run("2" * 64)
    assert refused.returncode == 1 and "expected " + "2" * 64 in refused.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "pip.log").exists()
    done = run(good)
    cached = tmp_path / "cache" / "dlvm" / "wheels" / wheel.parent.name / wheel.name
    assert f"DLVM_HOROVOD_WHEEL={cached}" in done.stdout
    assert cached.read_bytes() == wheel.read_bytes()
    installs = (tmp_path / "pip.log").read_text().splitlines()
    # The dependencies from the wheels sent alone (never the index), then the wheel.
    assert installs[0].startswith(f"-m pip install -q --no-index --find-links {house} ")
    assert "cffi==2.1.1" in installs[0].split()
    assert installs[-1] == f"-m pip install -q --no-deps {cached}"


@pytest.mark.torch
def test_a_wheel_sent_for_another_combination_is_refused(tmp_path: Path) -> None:
    python = _python_serving(tmp_path, b"")
    wheel = _sent_wheel(tmp_path, "horovod-0.28.1-torch1.0-cp27-linux_x86_64-gloo")
    result = _script(
        tmp_path,
        "wheel",
        python=python,
        HOROVOD_WHEEL=str(wheel),
        HOROVOD_WHEEL_SHA256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
    )
    assert result.returncode == 1 and "is not one this node takes" in result.stderr
    assert not (tmp_path / "cache").exists()
