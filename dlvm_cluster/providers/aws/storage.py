"""S3 buckets on the nodes: one Mountpoint for Amazon S3 (`mount-s3`) mount per `storage`
entry, acting as the nodes' role (the instance profile the module gives access to exactly
these buckets), kept by a systemd unit so that it comes back after a reboot or a stop.

Options fit checkpoints: `--prefix` for s3://BUCKET/PREFIX, `--allow-other` with the SSH
user's uid/gid (jobs run as that user), `--allow-delete` and `--allow-overwrite` on a writable
mount (a checkpoint is rewritten in place; Mountpoint refuses both otherwise), `--read-only`
for a read-only one, and a local cache on the node's disk kept to a share of it. Mountpoint
writes files sequentially and does not rename: jobs should write a checkpoint to its final
name (torch.save does).
"""

from __future__ import annotations

import hashlib
import re
import shlex

from dlvm_cluster.spec.model import ClusterSpec, StorageMount

CACHE_ROOT = "/var/cache/dlvm-mount-s3"
UNIT_DIR = "/etc/systemd/system"
MOUNT_WAIT_SECONDS = 60
# All cached mounts together take at most 1/CACHE_SHARE_OF_DISK of the root volume.
CACHE_SHARE_OF_DISK = 4
# AWS's package of Mountpoint for Ubuntu and Debian (x86_64).
MOUNT_S3_DEB = "https://s3.amazonaws.com/mountpoint-s3-release/latest/x86_64/mount-s3.deb"
MISSING_MOUNT_S3 = (
    "Mountpoint for Amazon S3 (mount-s3) is not installed and could not be: install it in the "
    "image (AWS's mount-s3.deb or .rpm), or give the nodes a route to the internet"
)


def unit_name(entry: StorageMount) -> str:
    """The systemd unit of a mount: its path (readable) and a short digest (so that /a-b and
    /a/b never share one)."""
    readable = re.sub(r"[^a-z0-9]+", "-", entry.mount.lower()).strip("-")[:40]
    digest = hashlib.sha256(entry.mount.encode()).hexdigest()[:8]
    return f"dlvm-s3-{readable}-{digest}.service"


def cache_limit_mb(spec: ClusterSpec) -> int:
    cached = sum(1 for entry in spec.storage if entry.cache)
    disk_gb = int(getattr(spec.nodes, "disk_gb", 0) or 0)
    return disk_gb * 1024 // CACHE_SHARE_OF_DISK // max(1, cached)


def mount_s3_argv(entry: StorageMount, cache_mb: int) -> list[str]:
    """The mount-s3 command line of one mount, in the foreground (systemd keeps it running).
    `$UID_`/`$GID_` stand for the SSH user's ids, filled in on the node."""
    argv = ["mount-s3", "--foreground", "--allow-other", "--uid", "$UID_", "--gid", "$GID_"]
    if entry.prefix:
        argv += ["--prefix", f"{entry.prefix}/"]
    if entry.read_only:
        argv += ["--read-only"]
    else:
        argv += ["--allow-delete", "--allow-overwrite"]
    if entry.cache:
        argv += [
            "--cache",
            f"{CACHE_ROOT}/{unit_name(entry).removesuffix('.service')}",
            "--max-cache-size",
            str(cache_mb),
        ]
    return [*argv, entry.bucket_name, entry.mount]


def _unit_text(entry: StorageMount, cache_mb: int) -> str:
    words = [
        "$MOUNT_S3" if word == "mount-s3" else word if word.startswith("$") else shlex.quote(word)
        for word in mount_s3_argv(entry, cache_mb)
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
    cache = shlex.quote(f"{CACHE_ROOT}/{unit.removesuffix('.service')}")
    return [
        f"sudo mkdir -p {mount} {cache}",
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
        f"    echo 'mount-s3 did not mount {entry.bucket} at {entry.mount}:' >&2",
        f"    sudo journalctl -u {unit} -n 20 --no-pager >&2; exit 1",
        "  fi; sleep 1",
        "done",
    ]


def storage_script(spec: ClusterSpec) -> str:
    """POSIX shell text, run as the SSH user (who has sudo on the AMIs dlvm uses), that
    installs Mountpoint where missing and mounts every storage entry; idempotent."""
    if not spec.storage:
        return ""
    deb = shlex.quote(MOUNT_S3_DEB)
    lines = [
        "MOUNT_S3=$(command -v mount-s3 || true)",
        'if [ -z "$MOUNT_S3" ]; then',
        '  pkg=$(mktemp --suffix=.deb) && curl -fsSL -o "$pkg" ' + deb + " && "
        'sudo apt-get install -y "$pkg" >/dev/null 2>&1 && rm -f "$pkg" '
        f"|| {{ echo {shlex.quote(MISSING_MOUNT_S3)} >&2; exit 1; }}",
        "  MOUNT_S3=$(command -v mount-s3)",
        "fi",
        "UID_=$(id -u); GID_=$(id -g)",
    ]
    cache_mb = cache_limit_mb(spec)
    for entry in spec.storage:
        lines.extend(_mount_lines(entry, cache_mb))
    return "\n".join(lines) + "\n"
