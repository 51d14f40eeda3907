"""A cluster named on the command line: its name, or the path of its YAML file.

Every command resolves its argument here, once: a name becomes the `Cluster` of one that
exists; a file is loaded (once: the command reuses the LoadedSpec) and names its cluster.
The `Cluster` (orchestrate/cluster/context.py) is what every verb of the command is handed.
Light to import: the fast path (cli/fast_path.py) uses it too, and for a name neither
pydantic nor ruamel is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.spec.model import LoadedSpec
    from dlvm_cluster.state import ClusterState

CLUSTER_FILE_SUFFIXES = (".yaml", ".yml")


def is_cluster_file(target: str) -> bool:
    """A YAML path, or any existing file: a file shadows a cluster of the same name."""
    return target.endswith(CLUSTER_FILE_SUFFIXES) or Path(target).is_file()


def resolve(target: str) -> Cluster:
    """CLUSTER on the command line: the cluster, with its file (`loaded`) when one was given.

    A name must be a cluster that `up` made; a file need not be up yet (the command says
    what is missing)."""
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.state import existing_cluster

    if is_cluster_file(target):
        return Cluster.of(load_file(Path(target)))
    return Cluster(existing_cluster(target))


def of_file(path: Path) -> Cluster:
    """A FILE argument: its cluster, with the file loaded."""
    from dlvm_cluster.orchestrate.cluster.context import Cluster

    return Cluster.of(load_file(path))


def cluster_state(target: str) -> ClusterState:
    """Only the state dir, for `top`, whose sampler keeps its own connections and never
    builds the provider nor reads the file's contents beyond its name."""
    from dlvm_cluster.state import ClusterState, existing_cluster

    if is_cluster_file(target):
        return ClusterState.for_name(load_file(Path(target)).spec.name)
    return existing_cluster(target)


def load_file(path: Path) -> LoadedSpec:
    """A FILE argument: parsed and validated (pydantic and ruamel are imported only here)."""
    from dlvm_cluster import providers

    return providers.load_spec(path)
