"""The typed model of a cluster file (the README's "Cluster file").

Every model is frozen and forbids unknown keys, so a misspelt key is an error, never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dlvm_cluster.inventory import (
    CLUSTER_NAME_PATTERN,
    host_key_problem,
    host_problem,
    unsafe_for_ssh_files,
    user_problem,
)

NAME_PATTERN = f"^{CLUSTER_NAME_PATTERN}$"
MAX_NAME_LENGTH = 40
MAX_NODES = 1000
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"


def _not_bool(value: object) -> object:
    # Lax validation would read `count: true` as 1; a switch where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def _env_name(name: str) -> str:
    if not re.fullmatch(ENV_NAME_PATTERN, name):
        raise ValueError(
            "is not a valid environment variable name "
            "(letters, digits and _, not starting with a digit)"
        )
    if name.startswith("DLVM_"):
        raise ValueError("names starting with DLVM_ are set by dlvm itself")
    return name


def _checked_by(problem: Callable[[str], str]) -> Callable[[str], str]:
    """A validator from one of the inventory's checks (which return "" for a good value)."""

    def check(value: str) -> str:
        found = problem(value)
        if found:
            raise ValueError(found)
        return value

    return check


def no_control_characters(value: str) -> str:
    if unsafe_for_ssh_files(value):
        raise ValueError("must not hold control characters (a newline, a tab, ...)")
    return value


WholeNumber = Annotated[int, BeforeValidator(_not_bool)]
EnvName = Annotated[str, AfterValidator(_env_name)]
# What the ssh provider writes into ssh configs, known_hosts files and ssh command lines.
HostName = Annotated[str, AfterValidator(_checked_by(host_problem))]
UserName = Annotated[str, AfterValidator(_checked_by(user_problem))]
HostKey = Annotated[str, AfterValidator(_checked_by(host_key_problem))]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ProviderConfig(Model):
    """The `provider:` mapping. Each kind's own keys are a subclass of this, in the kind's
    package under providers/, given to the loader through its registry entry (spec/kinds.py)."""

    kind: str


class Accelerator(Model):
    type: str = Field(min_length=1)
    count: WholeNumber = Field(ge=1, le=16)


class Nodes(Model):
    """The `nodes:` keys every provider kind takes; a kind that takes more extends this
    (its registry entry names the subclass), and the others refuse those keys."""

    count: WholeNumber = Field(ge=1, le=MAX_NODES)
    accelerator: Accelerator | None = None


class FileSync(Model):
    src: str = Field(min_length=1)
    dst: str = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)


Framework = Literal["torchrun", "horovod", "deepspeed", "accelerate", "mpi", "none"]


NodeLossAction = Literal["replace", "fail"]
DEFAULT_HANG_TIMEOUT_MINUTES = 30


class Job(Model):
    framework: Framework = "none"
    workdir: str = "~"
    command: str = Field(min_length=1)
    procs_per_node: WholeNumber | Literal["auto"] = "auto"
    nnodes: str | None = None
    max_restarts: WholeNumber = Field(default=3, ge=0, le=100)
    # A lost node (preempted, deleted, unreachable) is replaced alone and the job restarted
    # from its checkpoint, or the job fails.
    on_node_loss: NodeLossAction = "replace"
    # Restarts when a rank fails on a healthy cluster: 0, since such a failure is usually a bug
    # that a restart repeats.
    max_restarts_on_error: WholeNumber = Field(default=0, ge=0, le=100)
    # No new output from any rank for this long counts as a failure (a hung collective would
    # otherwise hold the cluster until NCCL's own timeout); null: never.
    hang_timeout_minutes: WholeNumber | None = Field(
        default=DEFAULT_HANG_TIMEOUT_MINUTES, ge=1, le=7 * 24 * 60
    )
    # Run `dlvm check` (GPU health, collective bandwidth) before launching, and refuse a
    # failing cluster.
    check: bool = False

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


# A Cloud Storage (gs://) or S3 (s3://) bucket, optionally with a prefix inside it:
# gs://BUCKET[/PREFIX]. Which scheme a cluster takes is its provider kind's rule.
BUCKET_PATTERN = r"(gs|s3)://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/[^\s]*)?"
# Where a mount must not go: over the system a node runs from. Folders a mount must not be,
# nor be inside of:
SYSTEM_TREES = (
    *("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc"),
    *("/run", "/sbin", "/snap", "/sys", "/usr"),
    *("/var/lib", "/var/log", "/var/cache", "/var/run", "/var/tmp", "/var/spool"),
    *("/var/lock", "/var/mail"),  # /var/lock is /run/lock; /var/spool/mail is /var/mail
)
# Folders a mount must not be (their subfolders are fine): a mount at /home/USER would hide
# that user's ~/.ssh, and with it every way into the node.
RESERVED_MOUNTS = frozenset({"/", "/home", "/tmp", "/var", "/opt", "/mnt", "/srv"})
# Homes whose dot-folders (~/.ssh: the node's keys, the cluster's private key written there
# by `up`; ~/.dlvm: the node files, the secrets file among them) a mount must not be, nor be
# inside of: it would hide them, or keep them in a bucket that outlives the cluster. Root's
# home is refused whole.
USER_HOMES = "/home/"
ROOT_HOME = "/root"


def _mount_point(value: str) -> str:
    parts = value.split("/")[1:]
    if (
        not value.startswith("/")
        or any(part in ("", ".", "..") for part in parts[:-1])
        or (parts[-1] in (".", ".."))
    ):
        raise ValueError("must be an absolute path like /ckpt (no `.`, `..` or //)")
    normal = value.rstrip("/") or "/"
    inside = [tree for tree in SYSTEM_TREES if normal == tree or normal.startswith(tree + "/")]
    in_home = normal.removeprefix(USER_HOMES).split("/") if normal.startswith(USER_HOMES) else []
    home = len(in_home) == 1 or (len(in_home) > 1 and in_home[1].startswith("."))
    home = home or normal == ROOT_HOME or normal.startswith(ROOT_HOME + "/")
    if normal in RESERVED_MOUNTS or inside or home:
        raise ValueError(
            f"{normal} holds the node's own system"
            f"{' (a user home or its dot-folders, with SSH keys and secrets)' if home else ''}: "
            "mount storage at a folder of its own, like /ckpt"
        )
    if unsafe_for_ssh_files(value) or any(c in value for c in " '\"$`\\"):
        raise ValueError("must not hold spaces, quotes or control characters")
    return normal


def _bucket(value: str) -> str:
    if not re.fullmatch(BUCKET_PATTERN, value):
        raise ValueError(
            "must be a bucket as gs://BUCKET or gs://BUCKET/PREFIX (s3:// for S3) "
            "(lowercase letters, digits, - _ .)"
        )
    # The prefix becomes a folder (gcsfuse's --only-dir; a host folder on the local provider):
    # `.`, `..` or an empty part would name another folder than the one written.
    prefix = value.partition("://")[2].partition("/")[2].rstrip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError("the PREFIX of gs://BUCKET/PREFIX must not hold `.`, `..` or `//`")
    if any(c in value for c in "'\"$`\\") or unsafe_for_ssh_files(value):
        raise ValueError("must not hold quotes, `$`, backslashes or control characters")
    return value


class StorageMount(Model):
    """Storage shared by every node that outlives nodes and `down`: a Cloud Storage bucket
    (gcsfuse on gcp; a host folder standing in for it on the local provider)."""

    mount: Annotated[str, AfterValidator(_mount_point)]
    bucket: Annotated[str, AfterValidator(_bucket)]
    read_only: bool = False
    cache: bool = True  # gcp: gcsfuse's file cache on the node's disk
    # The mount whose path jobs get as DLVM_CHECKPOINT_DIR (default: the first writable one).
    checkpoint: bool = False

    @property
    def bucket_name(self) -> str:
        """BUCKET of gs://BUCKET/PREFIX."""
        return self.bucket.partition("://")[2].partition("/")[0]

    @property
    def prefix(self) -> str:
        """PREFIX of gs://BUCKET/PREFIX, without slashes at its ends ("" for the whole bucket)."""
        return self.bucket.partition("://")[2].partition("/")[2].strip("/")


AutostopAction = Literal["stop", "down"]


class Autostop(Model):
    """The idle guard, decided on the nodes so it works with this machine switched off."""

    idle_minutes: WholeNumber | None = Field(default=30, ge=1, le=7 * 24 * 60)  # null: never
    action: AutostopAction = "stop"
    # Apply the action after this many hours however busy the cluster is; null: no limit.
    max_hours: WholeNumber | None = Field(default=None, ge=1, le=120 * 24)


class SecretValue(Model):
    """An env value kept out of output, logs, plan, render and the nodes' process lists:
    `{value: TEXT, secret: true}`, or `{from_env: NAME}` to take it from your environment
    when dlvm runs (so it never has to be written in the file)."""

    value: str | None = None
    from_env: Annotated[str, Field(pattern=f"^{ENV_NAME_PATTERN}$")] | None = None
    secret: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> SecretValue:
        if (self.value is None) == (self.from_env is None):
            raise ValueError("give exactly one of value or from_env")
        return self


# Tags pydantic puts in error paths for the two forms of an env value; the loader drops them.
UNION_TAGS = frozenset({"plain-value", "secret-value"})
EnvValue = Annotated[
    # Numbers and booleans are written as text for the process (see _env_scalars_as_text).
    Annotated[
        str,
        Tag("plain-value"),
        WithJsonSchema({"type": ["string", "number", "boolean"]}),
    ]
    | Annotated[SecretValue, Tag("secret-value")],
    # Called on file data (a mapping) when loading and on a SecretValue when serializing.
    Discriminator(
        lambda value: "secret-value" if isinstance(value, dict | SecretValue) else "plain-value"
    ),
]


class ClusterSpec(Model):
    """A cluster file. `provider` and `nodes` are typed here by what every kind shares; the
    loader validates a file with its kind's model (spec/kinds.py), whose fields are the kind's
    subclasses, so a spec loaded from a file or the state dir holds those."""

    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    provider: ProviderConfig
    nodes: Nodes
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    files: list[FileSync] = Field(default_factory=list)
    setup: str | None = None
    job: Job | None = None
    storage: list[StorageMount] = Field(default_factory=list)
    autostop: Autostop | None = None  # None: the cluster runs until stopped or taken down

    @property
    def checkpoint_storage(self) -> StorageMount | None:
        """The mount named `checkpoint: true`, else the first writable one (checkpoints are
        written there): DLVM_CHECKPOINT_DIR. None when every mount is read-only."""
        marked = [entry for entry in self.storage if entry.checkpoint]
        writable = [entry for entry in self.storage if not entry.read_only]
        chosen = marked or writable
        return chosen[0] if chosen else None

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

    def plain_env(self) -> dict[str, str]:
        """The env values that may be shown and passed on command lines."""
        plain = {}
        for name, item in self.env.items():
            if isinstance(item, str):
                plain[name] = item
            elif not item.secret and item.value is not None:
                plain[name] = item.value
        return plain

    def secret_env(self) -> dict[str, SecretValue]:
        return {
            name: item
            for name, item in self.env.items()
            if isinstance(item, SecretValue) and (item.secret or item.from_env is not None)
        }


class LoadedSpec(BaseModel):
    """A spec with the file it came from: paths in `files` are relative to that file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: ClusterSpec
    path: Path
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def source_path(self, entry: FileSync) -> Path:
        """A `files` source as an absolute path: relative paths start at the cluster file."""
        source = Path(entry.src).expanduser()
        return source if source.is_absolute() else (self.base_dir / source).resolve()
