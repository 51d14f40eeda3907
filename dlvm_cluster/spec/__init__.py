"""The cluster file: YAML in, a typed and immutable ClusterSpec out."""

from dlvm_cluster.spec.load import load_spec, load_spec_text
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec

__all__ = ["ClusterSpec", "LoadedSpec", "load_spec", "load_spec_text"]
