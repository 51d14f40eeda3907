"""The typed model of a cluster file (see DESIGN.md, "Cluster file").

Every model is frozen and forbids unknown keys, so a misspelt key is an error, never ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
MAX_NAME_LENGTH = 40
LOCAL_MAX_NODES = 64
MAX_NODES = 1000


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class LocalProvider(Model):
    """Nodes are network namespaces with their own sshd on this machine."""

    kind: Literal["local"]


class SshHost(Model):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1)
    host_key: str | None = None


class SshProvider(Model):
    """Machines that already exist: no Terraform."""

    kind: Literal["ssh"]
    hosts: list[SshHost] = Field(min_length=1)
    identity_file: str | None = None


class GcpProvider(Model):
    kind: Literal["gcp"]
    project: str = Field(min_length=1)
    region: str = Field(min_length=1)
    zones: list[str] = Field(min_length=1)
    allowed_ssh_cidrs: list[str] = Field(min_length=1)
    network: str | None = None
    subnetwork: str | None = None


Provider = Annotated[LocalProvider | SshProvider | GcpProvider, Field(discriminator="kind")]


class Accelerator(Model):
    type: str = Field(min_length=1)
    count: int = Field(ge=1, le=16)


class Nodes(Model):
    count: int = Field(ge=1, le=MAX_NODES)
    machine_type: str | None = None
    accelerator: Accelerator | None = None
    spot: bool = False
    disk_gb: int = Field(default=200, ge=10, le=65536)
    image: str | None = None


class FileSync(Model):
    src: str = Field(min_length=1)
    dst: str = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)


Framework = Literal["torchrun", "horovod", "deepspeed", "accelerate", "mpi", "none"]


class Job(Model):
    framework: Framework = "none"
    workdir: str = "~"
    command: str = Field(min_length=1)
    procs_per_node: int | Literal["auto"] = "auto"
    nnodes: str | None = None
    max_restarts: int = Field(default=3, ge=0, le=100)

    @field_validator("procs_per_node")
    @classmethod
    def _positive_procs(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'auto' or a whole number of at least 1")
        return value

    @field_validator("nnodes")
    @classmethod
    def _nnodes_range(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+(:\d+)?", value):
            raise ValueError('must be N or MIN:MAX, for example "1:4"')
        return value


class ClusterSpec(Model):
    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    provider: Provider
    nodes: Nodes
    env: dict[str, str] = Field(default_factory=dict)
    files: list[FileSync] = Field(default_factory=list)
    setup: str | None = None
    job: Job | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith("DLVM_"):
                raise ValueError(f"{key!r}: names starting with DLVM_ are set by dlvm itself")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_scalars_as_text(cls, value: object) -> object:
        # `OMP_NUM_THREADS: 4` is what people write; the process sees text either way.
        if isinstance(value, dict):
            return {
                key: (str(item).lower() if isinstance(item, bool) else str(item))
                if isinstance(item, int | float)
                else item
                for key, item in value.items()
            }
        return value


def semantic_problems(spec: ClusterSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that span several fields, as (field path, message) so the loader can point at them."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    provider = spec.provider
    if isinstance(provider, LocalProvider) and spec.nodes.count > LOCAL_MAX_NODES:
        problems.append(
            (
                ("nodes", "count"),
                f"{spec.nodes.count} is above the local provider's limit of {LOCAL_MAX_NODES}",
            )
        )
    if isinstance(provider, SshProvider) and spec.nodes.count > len(provider.hosts):
        problems.append(
            (
                ("nodes", "count"),
                f"{spec.nodes.count} is more than the {len(provider.hosts)} hosts listed under "
                "provider.hosts",
            )
        )
    return problems


class LoadedSpec(BaseModel):
    """A spec with the file it came from: paths in `files` are relative to that file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ClusterSpec
    path: Path
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent
