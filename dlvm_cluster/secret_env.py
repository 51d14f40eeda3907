"""Secret env values: resolved on this machine, delivered to nodes through a 0600 file over
SSH's stdin (never a command line, so never in a process list), and masked in everything
dlvm prints or logs."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterable, Mapping

from dlvm_cluster.errors import UsageError
from dlvm_cluster.spec.model import ClusterSpec

MASK = "***"


def resolve(
    spec: ClusterSpec, environ: Mapping[str, str] | None = None, *, strict: bool = True
) -> dict[str, str]:
    """Each secret's value: written in the file, or read from the user's environment now.
    Not strict: a variable that is not set is skipped; masking output then needs the values
    the nodes hold as well (orchestrate/nodes/masking.py reads them)."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, item in spec.secret_env().items():
        if item.from_env is not None:
            if item.from_env not in environ:
                if not strict:
                    continue
                raise UsageError(
                    f"env.{name} comes from your environment variable {item.from_env}, "
                    "which is not set",
                    hint=f"export {item.from_env}=... before running dlvm",
                )
            values[name] = environ[item.from_env]
        elif item.value is not None:
            values[name] = item.value
    return values


def file_content(values: Mapping[str, str]) -> bytes:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()).encode()


def redactor(values: Mapping[str, str]) -> Callable[[str], str]:
    """A function that masks every secret value (of 4 characters or more) in a line.

    Output reaches it line by line, so a value that spans lines (a PEM key, a service
    account's JSON) is masked by its lines as well, each (stripped, 4 characters or more)
    wherever it appears: alone on its line, or inside a longer one. A value holding a quote
    is masked in its shell-quoted form too (what `bash -x` prints), and every form also as
    JSON escapes it (a program printing its config as JSON)."""
    secrets = sorted(_forms(values.values()), key=len, reverse=True)
    if not secrets:
        return lambda line: line

    def redact(line: str) -> str:
        for secret in secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return line

    return redact


def _forms(values: Iterable[str]) -> set[str]:
    """Every text that stands for one of the values in a line of output."""
    forms: set[str] = set()
    for value in values:
        candidates = [value, *value.splitlines()]
        if "'" in value:
            candidates.append(shlex.quote(value))
        for candidate in candidates:
            form = candidate if candidate is value else candidate.strip()
            forms.update((form, json.dumps(form)[1:-1]))  # as printed, and inside JSON text
    return {form for form in forms if len(form) >= 4}
