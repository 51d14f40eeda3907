"""The state dir of each cluster ($DLVM_HOME/clusters/NAME, mode 0700): its layout, every
file's name in one place (`ClusterState`, docs/ARCHITECTURE.md has the table), and its lock.

Everything dlvm knows about a cluster lives here, written atomically, so that a process killed
at any moment leaves files from which `up` converges and `down` cleans up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import StateError, UsageError

STATE_MODE = 0o700
SECRET_MODE = 0o600
STAMP_KEY_BYTES = 32

# The agent's files in the state dir (remote/agent_process.py and agent_client.py, which are
# handed the state dir's path, use these names).
AGENT_SOCKET = "agent.sock"
AGENT_LOCK = "agent.lock"
AGENT_LOG = "agent.log"
# In each job's local log folder (ClusterState.job_logs): the supervisor's events and output.
EVENTS_LOG = "events.log"
SUPERVISOR_LOG = "supervisor.log"


def dlvm_home() -> Path:
    return Path(os.environ.get("DLVM_HOME", "~/.dlvm")).expanduser()


def storage_root() -> Path:
    """Where the local provider keeps the folders that stand in for Cloud Storage buckets
    (storage/BUCKET/PREFIX): beside the clusters, never inside one, so that they outlive
    nodes and `down` as a bucket does."""
    return dlvm_home() / "storage"


def clusters_root() -> Path:
    return dlvm_home() / "clusters"


def private_dir(path: Path) -> Path:
    """Make the directory `path` (and every missing parent) 0700; an existing one between
    DLVM_HOME and `path`, DLVM_HOME included, that is ours and open to others is narrowed to
    0700 (mkdir's mode applies to the last part only, and older versions made DLVM_HOME and
    clusters/ 0755). Shared directories (sticky, like /tmp) and the root are never changed."""
    missing = []
    current = path
    while not os.path.lexists(current) and current.parent != current:
        missing.append(current)
        current = current.parent
    try:
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=STATE_MODE)
            os.chmod(directory, STATE_MODE)
        home = dlvm_home()
        if path == home or home in path.parents:
            current = path
            while current != home:
                _narrow(current)
                current = current.parent
            _narrow(home)
    except OSError as exc:
        raise StateError(
            f"cannot make the directory {path}: {exc.strerror}",
            hint="check the owner and permissions of DLVM_HOME",
        ) from exc
    return path


def _narrow(directory: Path) -> None:
    """chmod go-rwx, for a directory of ours that others may enter or read."""
    st = os.stat(directory)
    mode = stat.S_IMODE(st.st_mode)
    shared = mode & stat.S_ISVTX or directory.parent == directory
    if st.st_uid == os.getuid() and mode & 0o077 and not shared:
        os.chmod(directory, mode & ~0o077)


def write_atomic(path: Path, content: str | bytes, mode: int = SECRET_MODE) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(
            f"cannot write {path}: {exc.strerror}",
            hint="check free disk space and the permissions of DLVM_HOME",
        ) from exc


@dataclass(frozen=True)
class ClusterState:
    """The layout of one cluster's state dir: every path in it, by what it holds; creating the
    object touches nothing on disk."""

    name: str
    root: Path

    @classmethod
    def for_name(cls, name: str) -> ClusterState:
        return cls(name=name, root=clusters_root() / name)

    @property
    def terraform_dir(self) -> Path:
        return self.root / "terraform"

    @property
    def key_path(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "ssh" / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.json"

    @property
    def applied_spec_path(self) -> Path:
        return self.root / "spec.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock"

    @property
    def provider_kind_path(self) -> Path:
        """The provider kind, recorded before machines are touched."""
        return self.root / "provider"

    @property
    def secret_names_path(self) -> Path:
        """The names (never values) of the secrets installed on the nodes."""
        return self.root / "secret-names.json"

    @property
    def stopped_path(self) -> Path:
        """The last `dlvm stop`: {"by", "at"}."""
        return self.root / "stopped.json"

    @property
    def usage_path(self) -> Path:
        """Node-hours, running and stopped."""
        return self.root / "usage.json"

    @property
    def autostop_path(self) -> Path:
        """What `dlvm autostop` set, until the next `up`."""
        return self.root / "autostop.json"

    @property
    def boot_image_path(self) -> Path:
        """The image a provider resolved the nodes' image family to: {"family", "image"}."""
        return self.root / "boot-image.json"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_record(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def job_spec(self, job_id: str) -> Path:
        """The spec a job was launched with (a detached supervisor relaunches from it)."""
        return self.jobs_dir / f"{job_id}.spec"

    def job_lock(self, job_id: str) -> Path:
        """flock'ed by whoever changes the job's record (orchestrate/jobs/store.py)."""
        return self.jobs_dir / f"{job_id}.lock"

    def job_cancel(self, job_id: str) -> Path:
        """Present once `cancel` (or `down`) asked the job's supervisor to stop."""
        return self.jobs_dir / f"{job_id}.cancel"

    def exec_logs(self, started: str) -> Path:
        """One `exec`'s output per node (`started`: its time, YYYYmmdd-HHMMSS)."""
        return self.logs_dir / "exec" / started

    def job_logs(self, job_id: str) -> Path:
        """The job's local logs: one per node, EVENTS_LOG and SUPERVISOR_LOG."""
        return self.logs_dir / "jobs" / job_id

    @property
    def agent_socket(self) -> Path:
        return self.root / AGENT_SOCKET

    @property
    def agent_lock(self) -> Path:
        return self.root / AGENT_LOCK

    @property
    def agent_log(self) -> Path:
        return self.root / AGENT_LOG

    def exists(self) -> bool:
        return self.inventory_path.exists() or self.terraform_dir.exists()

    def create(self) -> None:
        for directory in (self.root, self.root / "ssh", self.logs_dir):
            private_dir(directory)

    def check_permissions(self) -> None:
        """Refuse state that others can read, as ssh refuses such keys."""
        for path in (self.root, self.key_path):
            if not path.exists():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise StateError(
                    f"{path} is readable by other users (mode {mode:o})",
                    hint=f"run: chmod {'700' if path.is_dir() else '600'} {path}",
                )

    @property
    def internal_key_path(self) -> Path:
        return self.root / "ssh" / "internal_ed25519"

    def ensure_key_pair(self) -> None:
        """The cluster's own ed25519 keys, made once: one for dlvm to reach the nodes, one the
        nodes use to reach each other (so the first never has to leave this machine)."""
        lines = []
        for path, comment in (
            (self.key_path, f"dlvm-{self.name}"),
            (self.internal_key_path, f"dlvm-{self.name}-internal"),
        ):
            if not path.exists():
                private, public = _new_key_pair(comment)
                write_atomic(path, private, SECRET_MODE)
                write_atomic(path.with_suffix(".pub"), public, 0o644)
            lines.append(path.with_suffix(".pub").read_text())
        wanted = "".join(lines)
        if not self.authorized_keys.exists() or self.authorized_keys.read_text() != wanted:
            write_atomic(self.authorized_keys, wanted, SECRET_MODE)

    @property
    def stamp_key_path(self) -> Path:
        return self.root / "ssh" / "stamp.key"

    def stamp_key(self) -> bytes:
        """The cluster's random key for the setup stamps it leaves on nodes (0600, made once,
        like the SSH keys): a stamp is readable on the node, and without a key a low-entropy
        secret could be guessed from it offline."""
        try:
            key = self.stamp_key_path.read_bytes()
        except FileNotFoundError:
            key = b""
        except OSError as exc:
            raise StateError(f"cannot read {self.stamp_key_path}: {exc.strerror}") from exc
        if len(key) < STAMP_KEY_BYTES:
            private_dir(self.stamp_key_path.parent)
            key = secrets.token_bytes(STAMP_KEY_BYTES)
            write_atomic(self.stamp_key_path, key, SECRET_MODE)
        return key

    def public_key(self) -> str:
        return self.key_path.with_suffix(".pub").read_text().strip()

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(
                f"cannot read {path}: {exc}", hint="the state dir is damaged; `dlvm down` cleans up"
            ) from exc

    def write_json(self, path: Path, value: Any) -> None:
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the cluster's lock: a second command that changes it is refused, naming the holder.

        flock is released by the kernel when the holder dies, so a killed dlvm never leaves a
        stale lock behind.
        """
        self.create()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, SECRET_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another dlvm"
                raise StateError(
                    f"cluster {self.name!r} is busy: {holder}",
                    hint="wait for that command to finish, or stop it",
                ) from exc
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"`dlvm {command}` (pid {os.getpid()} on {socket.gethostname()}, "
                f"since {time.strftime('%H:%M:%S')})\n".encode(),
                0,
            )
            yield
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _new_key_pair(comment: str) -> tuple[bytes, str]:
    # Imported here: only key creation needs cryptography, not every command's start-up.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + f" {comment}\n"


def existing_cluster(name: str) -> ClusterState:
    """The state of a cluster that `up` made; naming the known ones when there is none."""
    state = ClusterState.for_name(name)
    if not state.exists():
        known = sorted(p.name for p in clusters_root().glob("*") if p.is_dir())
        raise UsageError(
            f"no cluster named {name!r} under {clusters_root()}",
            hint=("known clusters: " + ", ".join(known))
            if known
            else "create one with `dlvm up FILE`",
        )
    return state


def list_clusters() -> list[ClusterState]:
    root = clusters_root()
    if not root.exists():
        return []
    return [ClusterState.for_name(p.name) for p in sorted(root.iterdir()) if p.is_dir()]


def python_bin_dir() -> str:
    """Directory of the running interpreter's scripts (torchrun, ...), for the local provider."""
    return str(Path(sys.executable).parent)
