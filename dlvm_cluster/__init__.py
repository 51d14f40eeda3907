"""dlvm-cluster: one YAML file becomes a cluster of GPU VMs, then SSH fan-out runs on it."""

__version__ = "0.1.0"
