"""Cloud Storage buckets on the nodes: one gcsfuse mount per `storage` entry, acting as the
nodes' service account, kept by a systemd unit so that it comes back after a reboot.

The options fit checkpoints: implicit directories (folders made by other tools show up),
`--only-dir` for a PREFIX, the file cache on the node's disk with parallel downloads (a
restarting job reads its checkpoint at disk speed the second time) kept to a share of that
disk (fuse_mounts.CACHE_SHARE_OF_DISK), `allow_other` with
the SSH user's uid/gid (jobs run as that user), and `-o ro` for a read-only mount.
"""

from __future__ import annotations

import shlex

from dlvm_cluster.providers import fuse_mounts
from dlvm_cluster.providers.gcp.config import gcp_nodes
from dlvm_cluster.spec.model import ClusterSpec, StorageMount

GCSFUSE = fuse_mounts.FuseMounter("gcsfuse", "GCSFUSE", "dlvm-storage", "/var/cache/dlvm-gcsfuse")
MISSING_GCSFUSE = (
    "gcsfuse (Cloud Storage FUSE) is not installed and apt cannot install it: use a Deep "
    "Learning VM image (they carry it), or install it in the image following Google's "
    "Cloud Storage FUSE install guide"
)


def unit_name(entry: StorageMount) -> str:
    return GCSFUSE.unit_name(entry)


def cache_limit_mb(spec: ClusterSpec) -> int:
    """The file cache size of each cached mount, in MiB: its part of the boot disk's share."""
    return fuse_mounts.cache_limit_mb(spec, gcp_nodes(spec).disk_gb)


def gcsfuse_argv(entry: StorageMount, cache_mb: int) -> list[str]:
    """The gcsfuse command line of one mount, in the foreground (systemd keeps it running),
    its file cache at most `cache_mb` MiB. `$UID_`/`$GID_` stand for the SSH user's ids,
    filled in on the node."""
    argv = ["gcsfuse", "--foreground", "--implicit-dirs", "-o", "allow_other"]
    argv += ["--uid", "$UID_", "--gid", "$GID_"]
    if entry.prefix:
        argv += ["--only-dir", entry.prefix]
    if entry.read_only:
        argv += ["-o", "ro"]
    if entry.cache:
        argv += [
            "--cache-dir",
            GCSFUSE.cache_dir(entry),
            f"--file-cache-max-size-mb={cache_mb}",
            "--file-cache-cache-file-for-range-read",  # a resumed job reads all of it anyway
            "--file-cache-enable-parallel-downloads",
        ]
    return [*argv, entry.bucket_name, entry.mount]


def storage_script(spec: ClusterSpec) -> str:
    """POSIX shell text, run as the SSH user (who has sudo on DLVM images), that installs
    gcsfuse where missing and mounts every storage entry; idempotent: a unit already in place
    and unchanged is only started (a no-op when running), a changed one is restarted."""
    if not spec.storage:
        return ""
    lines = [
        "GCSFUSE=$(command -v gcsfuse || true)",
        'if [ -z "$GCSFUSE" ]; then',
        "  sudo apt-get install -y gcsfuse >/dev/null 2>&1 || "
        "{ sudo apt-get update >/dev/null 2>&1 && sudo apt-get install -y gcsfuse >/dev/null; } "
        f"|| {{ echo {shlex.quote(MISSING_GCSFUSE)} >&2; exit 1; }}",
        "  GCSFUSE=$(command -v gcsfuse)",
        "fi",
        # Root runs gcsfuse (systemd); the files belong to the SSH user, whose jobs write them.
        "UID_=$(id -u); GID_=$(id -g)",
    ]
    cache_mb = cache_limit_mb(spec)
    for entry in spec.storage:
        lines.extend(GCSFUSE.mount_lines(entry, gcsfuse_argv(entry, cache_mb)))
    return "\n".join(lines) + "\n"
