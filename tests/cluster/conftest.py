"""Every test in this folder runs on real local clusters: it is marked `cluster`, and
without root (network namespaces, a bridge, sshd) the whole tier is skipped with the reason
instead of failing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NEEDS_ROOT = pytest.mark.skip(reason="needs root: network namespaces, bridge, sshd")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hooks in a conftest see the whole session's items: only this folder's are touched."""
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.cluster)
        if os.geteuid() != 0:
            item.add_marker(NEEDS_ROOT)
