"""Programs that run on the nodes, shipped there as source by the stages that need them.

netcheck.py        `dlvm check`'s probe and bandwidth test
watcher.py         the autostop watcher (run on the head; probes on every node)
build_horovod.sh   Horovod's patched build (a wheel on the head, installed on every node)

Each Python program is a standalone file that imports the standard library (and torch),
nothing of dlvm: a node has the framework environment of its image, not dlvm. `source(name)`
gives the bytes to send; `path(filename)` where the file lies on this machine.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def path(filename: str) -> Path:
    """Where the node program `filename` (e.g. `build_horovod.sh`) lies on this machine."""
    return _HERE / filename


def source(name: str) -> bytes:
    """The text of the node program `name` (a module of this package, e.g. `netcheck`)."""
    return (_HERE / f"{name}.py").read_bytes()
