"""A cluster named on the command line: its name, or the path of its YAML file.

Every command resolves its argument here, once: a name becomes the state of a cluster that
exists; a file is loaded (once: the command reuses the LoadedSpec) and names its cluster.
Light to import: the fast path (cli/fast_path.py) uses it too, and for a name neither
pydantic nor ruamel is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlvm_cluster.spec.model import LoadedSpec
    from dlvm_cluster.state import ClusterState

CLUSTER_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Resolved:
    """What a command gets from its CLUSTER argument."""

    state: ClusterState
    loaded: LoadedSpec | None  # the cluster file, when the argument was one


def is_cluster_file(target: str) -> bool:
    """A YAML path, or any existing file: a file shadows a cluster of the same name."""
    return target.endswith(CLUSTER_FILE_SUFFIXES) or Path(target).is_file()


def resolve(target: str) -> Resolved:
    """CLUSTER on the command line: the cluster's state, and its file when one was given.

    A name must be a cluster that `up` made; a file need not be up yet (the command says
    what is missing)."""
    from dlvm_cluster.state import ClusterState, existing_cluster

    if is_cluster_file(target):
        loaded = load_file(Path(target))
        return Resolved(ClusterState.for_name(loaded.spec.name), loaded)
    return Resolved(existing_cluster(target), None)


def cluster_state(target: str) -> ClusterState:
    """Only the state, for commands that never read the file's contents beyond its name."""
    return resolve(target).state


def load_file(path: Path) -> LoadedSpec:
    """A FILE argument: parsed and validated (pydantic and ruamel are imported only here)."""
    from dlvm_cluster import providers

    return providers.load_spec(path)
