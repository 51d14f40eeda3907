"""Secret env values: resolved on this machine, delivered to nodes through a 0600 file over
SSH's stdin (never a command line, so never in a process list), and masked in everything
dlvm prints or logs."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping

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
    """A function that masks every secret value (of 4 characters or more) in a line."""
    secrets = sorted((v for v in values.values() if len(v) >= 4), key=len, reverse=True)
    if not secrets:
        return lambda line: line

    def redact(line: str) -> str:
        for secret in secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return line

    return redact
