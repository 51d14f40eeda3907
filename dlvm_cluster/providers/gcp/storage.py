"""Cloud Storage buckets on the nodes: one gcsfuse mount per `storage` entry, acting as the
nodes' service account, kept by a systemd unit so that it comes back after a reboot.

The options fit checkpoints: implicit directories (folders made by other tools show up),
`--only-dir` for a PREFIX, the file cache on the node's disk with parallel downloads (a
restarting job reads its checkpoint at disk speed the second time) kept to a share of that
disk (CACHE_SHARE_OF_DISK), `allow_other` with the
SSH user's uid/gid (jobs run as that user), and `-o ro` for a read-only mount.
"""

from __future__ import annotations

import hashlib
import re
import shlex

from dlvm_cluster.providers.gcp.config import gcp_nodes
from dlvm_cluster.spec.model import ClusterSpec, StorageMount

CACHE_ROOT = "/var/cache/dlvm-gcsfuse"
UNIT_DIR = "/etc/systemd/system"
MOUNT_WAIT_SECONDS = 60
# The file cache lives on the boot disk, which the system, the image and the jobs' own files
# share: all cached mounts together take at most 1/CACHE_SHARE_OF_DISK of it. gcsfuse's -1
# (no limit) fills the disk with a dataset read once, and stops the node with it.
CACHE_SHARE_OF_DISK = 4
MISSING_GCSFUSE = (
    "gcsfuse (Cloud Storage FUSE) is not installed and apt cannot install it: use a Deep "
    "Learning VM image (they carry it), or install it in the image following Google's "
    "Cloud Storage FUSE install guide"
)


def unit_name(entry: StorageMount) -> str:
    """The systemd unit of a mount: named after its path (readable) plus a short digest (so
    that /a-b and /a/b never share one)."""
    readable = re.sub(r"[^a-z0-9]+", "-", entry.mount.lower()).strip("-")[:40]
    digest = hashlib.sha256(entry.mount.encode()).hexdigest()[:8]
    return f"dlvm-storage-{readable}-{digest}.service"


def cache_limit_mb(spec: ClusterSpec) -> int:
    """The file cache size of each cached mount, in MiB: its part of the boot disk's share."""
    cached = sum(1 for entry in spec.storage if entry.cache)
    return gcp_nodes(spec).disk_gb * 1024 // CACHE_SHARE_OF_DISK // max(1, cached)


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
            f"{CACHE_ROOT}/{unit_name(entry).removesuffix('.service')}",
            f"--file-cache-max-size-mb={cache_mb}",
            "--file-cache-cache-file-for-range-read",  # a resumed job reads all of it anyway
            "--file-cache-enable-parallel-downloads",
        ]
    return [*argv, entry.bucket_name, entry.mount]


def _unit_text(entry: StorageMount, cache_mb: int) -> str:
    """The unit file, with $GCSFUSE, $UID_ and $GID_ left for the node's shell to fill in."""
    words = [
        "$GCSFUSE" if word == "gcsfuse" else word if word.startswith("$") else shlex.quote(word)
        for word in gcsfuse_argv(entry, cache_mb)
    ]
    # `%` starts a specifier in unit files: a literal one (a prefix may hold it) is doubled.
    return (
        "[Unit]\n"
        f"Description=dlvm storage {entry.bucket} at {entry.mount}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(words)}\n"
        f"ExecStop=/bin/fusermount -u {shlex.quote(entry.mount)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    ).replace("%", "%%")


def _mount_lines(entry: StorageMount, cache_mb: int) -> list[str]:
    unit = unit_name(entry)
    mount = shlex.quote(entry.mount)
    cache = f"{CACHE_ROOT}/{unit.removesuffix('.service')}"
    # The unit text goes through an unquoted here-document, so $GCSFUSE, $UID_ and $GID_ are
    # filled in; nothing else in it holds a `$` (the spec refuses one in mounts and buckets).
    return [
        f"sudo mkdir -p {mount} {shlex.quote(cache)}",
        "new=$(mktemp)",
        f'cat > "$new" <<DLVM_UNIT\n{_unit_text(entry, cache_mb)}DLVM_UNIT',
        f'if ! cmp -s "$new" {UNIT_DIR}/{unit}; then',
        f'  sudo install -m 0644 "$new" {UNIT_DIR}/{unit} && sudo systemctl daemon-reload',
        f"  sudo systemctl enable {unit} >/dev/null",
        f"  if mountpoint -q {mount}; then sudo systemctl restart {unit}; fi",
        "fi",
        'rm -f "$new"',
        f"sudo systemctl start {unit}",
        f"i=0; until mountpoint -q {mount}; do",
        f"  i=$((i+1)); if [ $i -gt {MOUNT_WAIT_SECONDS} ]; then",
        f"    echo 'gcsfuse did not mount {entry.bucket} at {entry.mount}:' >&2",
        f"    sudo journalctl -u {unit} -n 20 --no-pager >&2; exit 1",
        "  fi; sleep 1",
        "done",
    ]


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
        lines.extend(_mount_lines(entry, cache_mb))
    return "\n".join(lines) + "\n"
