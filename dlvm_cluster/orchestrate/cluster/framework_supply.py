"""What this machine sends for a framework's node software (a `NodeSetup` with `needs_line`),
so that nodes that cannot reach the package index (local nodes, private cloud nodes) get it
all the same, built at most once per cluster.

The nodes that lack the software say what they need (the build script's `needs` mode: one
JSON line, parsed as hostile). For the head, which builds or installs first, this machine
sends a wheel from its own cache (~/.cache/dlvm/wheels) for a combination the head takes,
checked against the hash recorded when it was built; else, when the head can build, the
pinned source archive (kept in ~/.cache/dlvm/sources, fetched once with pip, checked against
the SHA-256 the build script pins before it is kept, sent or used). Every node that lacks
some of the pinned dependencies gets their wheels, fetched here for the node's Python and
platform. All of it goes over the command's SSH connections as a tar stream
(remote/sync.py), into the node's dlvm folder; the build script checks the hashes again
there. Where this machine cannot fetch something either, the node is left to its own index.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster import nodeside
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Node
from dlvm_cluster.launch.frameworks import NodeSetup
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import node_json
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.results import GroupResult, LineSink
from dlvm_cluster.remote.sync import push
from dlvm_cluster.shell import quote_path

FETCH_TIMEOUT_S = 600
Runner = Callable[[Sequence[Node], str, LineSink], GroupResult]
"""Runs a command on nodes in the job's environment, their lines to a sink; raises naming the
nodes where it failed."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_PLATFORM = re.compile(r"[a-z0-9_]{1,80}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pins:
    """What the build script pins, read from this machine's copy of it (never a node's word)."""

    package: str  # "horovod"
    version: str
    source_sha256: str
    dependencies: tuple[str, ...]  # "name==version"

    @property
    def source_name(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"


@dataclass(frozen=True)
class Needs:
    """A node's answer to `needs`, checked: only what this machine could act on survives."""

    has_wheel: bool
    problem: str  # why it cannot build ("": it can)
    accepts: tuple[str, ...]  # wheel folders it takes, best first
    missing: tuple[str, ...]  # pinned dependencies it lacks
    python: str  # "3.11"
    abi: str  # "cp311"
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class Sent:
    """The variables that hand the build script what was sent: for the head's build, and for
    the others' installs."""

    head_env: str = ""
    others_env: str = ""


def pins(setup: NodeSetup) -> Pins:
    text = nodeside.path(setup.build_script).read_text()
    prefix = setup.pins

    def value(name: str) -> str:
        found = re.search(rf"^{prefix}_{name}=(.+)$", text, re.M)
        if not found:
            raise AssertionError(f"{setup.build_script} pins no {prefix}_{name}")
        return found.group(1).strip()

    dependencies = tuple(value("DEPENDENCIES").strip("()").split())
    return Pins(prefix.lower(), value("VERSION"), value("SOURCE_SHA256"), dependencies)


def parse_needs(text: str, pinned: Pins) -> Needs:
    """A node's `needs` line, as a node may have sent anything: a folder name this machine
    would look up in its cache, a platform or version it would hand pip, a dependency it
    would fetch, each must have the expected form (NodeJsonError otherwise); dependencies
    that are not pinned are ignored."""
    data = node_json.loads_object(text)
    wheel = data.get("wheel")
    if not isinstance(wheel, bool):
        raise node_json.NodeJsonError("wheel is not true or false")
    accepts = node_json.texts(data, "accepts", max_items=8)
    prefix = f"{pinned.package}-{pinned.version}-"
    for folder in accepts:
        if not _NAME.fullmatch(folder) or not folder.startswith(prefix) or ".." in folder:
            raise node_json.NodeJsonError(f"accepts names {folder!r}, not a wheel folder")
    platforms = node_json.texts(data, "platforms", max_items=200, max_len=80)
    if not all(_PLATFORM.fullmatch(platform) for platform in platforms):
        raise node_json.NodeJsonError("platforms holds something that is no platform tag")
    python = node_json.text(data, "python", max_len=8)
    abi = node_json.text(data, "abi", max_len=8)
    if not re.fullmatch(r"3\.\d{1,2}", python) or abi != "cp" + python.replace(".", ""):
        raise node_json.NodeJsonError(f"python {python!r} and abi {abi!r} do not fit")
    wanted = set(node_json.texts(data, "missing", max_items=50, max_len=80))
    return Needs(
        has_wheel=wheel,
        problem=node_json.text(data, "problem", max_len=300),
        accepts=accepts,
        missing=tuple(pin for pin in pinned.dependencies if pin in wanted),
        python=python,
        abi=abi,
        platforms=platforms,
    )


def cache_root() -> Path:
    """This machine's dlvm cache, where the build script keeps its wheels too."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlvm"


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def cached_wheel(
    pinned: Pins, accepts: Sequence[str], progress: Progress
) -> tuple[Path, str] | None:
    """A wheel this machine built (or was given) for a combination the node takes, whose
    content still has the hash recorded beside it; (path, SHA-256)."""
    for folder in accepts:
        for wheel in sorted((cache_root() / "wheels" / folder).glob(f"{pinned.package}-*.whl")):
            recorded_file = wheel.with_name(wheel.name + ".sha256")
            recorded = recorded_file.read_text().strip() if recorded_file.is_file() else ""
            if not _SHA256.fullmatch(recorded):
                continue
            if sha256_of(wheel) == recorded:
                return wheel, recorded
            progress.note(f"{pinned.package}: {wheel} does not match its recorded hash; not sent")
    return None


def source_archive(pinned: Pins, progress: Progress) -> Path | None:
    """The pinned source archive on this machine, with the pinned SHA-256: from the cache,
    else fetched with pip (then kept); None when it cannot be had here."""
    archive = cache_root() / "sources" / pinned.source_name
    if archive.is_file():
        if sha256_of(archive) == pinned.source_sha256:
            return archive
        progress.note(f"{pinned.package}: {archive} is not the published source; fetching it again")
        archive.unlink()
    progress.stage(f"{pinned.package}: fetching the {pinned.version} source here, to send it")
    with tempfile.TemporaryDirectory() as work:
        fetched = Path(work) / pinned.source_name
        # The hash in pip's requirement: pip checks it as soon as the archive is downloaded,
        # before it prepares the archive's metadata, which runs the archive's own code.
        requirement = Path(work) / "requirement.txt"
        requirement.write_text(
            f"{pinned.package}=={pinned.version} --hash=sha256:{pinned.source_sha256}\n"
        )
        command = ["download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
        failure = _pip([*command, "-d", work, "-r", str(requirement)])
        if not failure and not fetched.is_file():
            failure = "pip fetched no source archive"
        if not failure and sha256_of(fetched) != pinned.source_sha256:
            failure = f"what was fetched does not have the pinned SHA-256 {pinned.source_sha256}"
        if failure:
            progress.note(f"{pinned.package}: cannot fetch its source here ({failure})")
            return None
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(archive.name + ".part")
        shutil.copyfile(fetched, partial)
        partial.replace(archive)  # whole or not at all
    return archive


def dependency_wheels(needs: Needs, into: Path, progress: Progress) -> bool:
    """Fetch wheels of the node's missing pinned dependencies for its Python and platform
    into `into`; False (said) when pip cannot."""
    command = ["download", "--no-deps", "--only-binary", ":all:", "-d", str(into)]
    command += ["--python-version", needs.python, "--implementation", "cp", "--abi", needs.abi]
    for platform in needs.platforms:
        command += ["--platform", platform]
    failure = _pip([*command, *needs.missing])
    if failure:
        progress.note(f"cannot fetch {' '.join(needs.missing)} here ({failure})")
    return not failure


def _pip(arguments: list[str]) -> str:
    """Run this Python's pip; what went wrong ("" : nothing)."""
    command = [sys.executable, "-m", "pip", *arguments, "-q", "--disable-pip-version-check"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return (errors or done.stderr.strip().splitlines() or ["pip failed"])[-1][:300]


def send(
    pool: SshPool,
    setup: NodeSetup,
    head: Node,
    missing: Sequence[Node],
    folder: str,
    run: Runner,
    script: str,
    progress: Progress,
) -> Sent:
    """Ask `missing` (the nodes that lack the software; the head first if it does) what they
    need, send it from this machine into `folder`/supply on each, and say how the build
    script is to find it. Raises when the head can neither be sent a wheel nor build."""
    pinned = pins(setup)
    targets = [head, *(node for node in missing if node.name != head.name)]
    answers: dict[str, str] = {}

    def sink(node: Node, stream: str, text: str) -> None:
        if text.startswith(setup.needs_line):
            answers[node.name] = text.removeprefix(setup.needs_line)
        else:
            progress.line(node, stream, text)

    run(targets, f"bash {quote_path(script)} needs", sink)
    needs: dict[str, Needs] = {}
    for node in targets:
        try:
            needs[node.name] = parse_needs(answers.get(node.name, ""), pinned)
        except node_json.NodeJsonError as exc:
            raise RemoteError(
                f"{node.name} answered what {setup.shown} needs with something else: {exc}",
                hint="run `dlvm up` again; `dlvm ssh` to the node to look at it",
            ) from None
    supply = f"{folder}/supply"
    env = setup.pins
    with tempfile.TemporaryDirectory() as staging:
        files = {node.name: Path(staging) / "nodes" / node.name for node in targets}
        files[head.name].mkdir(parents=True)
        head_env = _artifact_for_head(
            setup, pinned, needs[head.name], head, files[head.name], supply, env, progress
        )
        wheelhouses = _wheelhouses(needs, Path(staging), progress)
        for name, wheelhouse in wheelhouses.items():
            shutil.copytree(wheelhouse, files[name] / "deps", copy_function=_stage)
        for node in targets:
            if files[node.name].is_dir() and any(files[node.name].iterdir()):
                _push(pool, node, files[node.name], supply, setup, progress)
    wheelhouse_env = f"{env}_WHEELHOUSE={quote_path(supply + '/deps')} " if wheelhouses else ""
    return Sent(head_env=head_env + wheelhouse_env, others_env=wheelhouse_env)


def _artifact_for_head(
    setup: NodeSetup,
    pinned: Pins,
    head_needs: Needs,
    head: Node,
    into: Path,
    supply: str,
    env: str,
    progress: Progress,
) -> str:
    """Stage in `into` what the head builds or installs from; the variables that name it."""
    if head_needs.has_wheel:
        return ""
    wheel = cached_wheel(pinned, head_needs.accepts, progress)
    if wheel is not None:
        path, sha256 = wheel
        folder = path.parent.name
        (into / "wheel" / folder).mkdir(parents=True)
        _stage(path, into / "wheel" / folder / path.name)
        progress.stage(f"{pinned.package}: sending the wheel cached here to {head.name}")
        remote = f"{supply}/wheel/{folder}/{path.name}"
        return f"{env}_WHEEL={quote_path(remote)} {env}_WHEEL_SHA256={sha256} "
    if head_needs.problem:
        raise RemoteError(
            f"cannot build {setup.shown} on {head.name}: {head_needs.problem}",
            hint=f"or build its wheel once on this machine ({setup.build_script} wheel) for the "
            "head's Python, torch and platform: a wheel cached here is sent instead",
        )
    archive = source_archive(pinned, progress)
    if archive is None:
        return ""  # the head tries its own index
    (into / "source").mkdir()
    _stage(archive, into / "source" / archive.name)
    progress.stage(f"{pinned.package}: sending the {pinned.version} source to {head.name}")
    return f"{env}_SDIST={quote_path(f'{supply}/source/{archive.name}')} "


def _wheelhouses(needs: dict[str, Needs], staging: Path, progress: Progress) -> dict[str, Path]:
    """node -> a folder of wheels of the pinned dependencies it lacks, fetched here once per
    (Python, platforms, dependencies); a node whose fetch failed here gets none."""
    fetched: dict[tuple[object, ...], Path | None] = {}
    found: dict[str, Path] = {}
    for name, need in needs.items():
        if not need.missing or not need.platforms:
            continue
        key = (need.python, need.abi, need.platforms, need.missing)
        if key not in fetched:
            into = staging / f"wheelhouse-{len(fetched)}"
            into.mkdir()
            fetched[key] = into if dependency_wheels(need, into, progress) else None
        where = fetched[key]
        if where is not None:
            found[name] = where
    return found


def _stage(source: Path | str, target: Path | str) -> None:
    """`source` in the staging folder: a hard link where it can be (the tar stream reads it
    once), else a copy; its time kept, so an unchanged file is not sent again."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _push(
    pool: SshPool,
    node: Node,
    source: Path,
    destination: str,
    setup: NodeSetup,
    progress: Progress,
) -> None:
    """`source`'s files into `destination` on `node`, one tar stream over its connection."""
    (result,) = push(pool, [node], source, destination)
    if not result.ok:
        raise RemoteError(
            f"cannot send what {setup.shown} needs to {result.node}: {result.error}",
            hint="check `dlvm status`, then run `dlvm up` again",
        )
    if result.sent_files:
        megabytes = result.sent_bytes / 1e6
        progress.note(
            f"{setup.name}: sent {result.sent_files} file(s), {megabytes:.1f} MB, to {node.name}"
        )
