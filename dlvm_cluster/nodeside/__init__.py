"""Programs that run on the nodes, shipped there as source by the checks that need them.

Each is a standalone Python file that imports the standard library and torch, nothing of
dlvm: a node has the framework environment of its image, not dlvm. `source(name)` gives the
bytes to send.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def source(name: str) -> bytes:
    """The text of the node program `name` (a module of this package, e.g. `netcheck`)."""
    return (_HERE / f"{name}.py").read_bytes()
