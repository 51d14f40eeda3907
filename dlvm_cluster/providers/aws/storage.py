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

import shlex

from dlvm_cluster.providers import fuse_mounts
from dlvm_cluster.providers.aws.config import aws_nodes
from dlvm_cluster.providers.pinned import PINNED_DOWNLOADS, Pinned
from dlvm_cluster.spec.model import ClusterSpec, StorageMount

MOUNT_S3 = fuse_mounts.FuseMounter("mount-s3", "MOUNT_S3", "dlvm-s3", "/var/cache/dlvm-mount-s3")
# AWS's package of Mountpoint for Ubuntu and Debian (x86_64), installed only once its detached
# signature (the package's address with `.asc`) is good and made by a key AWS signs
# Mountpoint with, from the file of AWS's Mountpoint keys, which must hold no other key. The
# fingerprints are those AWS documents in "Verifying the signature of the Mountpoint for
# Amazon S3 package" (awslabs/mountpoint-s3, doc/INSTALL.md; the Amazon S3 User Guide's
# "Installing Mountpoint" has the same steps): 8AEF E705 EBE3 29C0 948C 75A6 6F1C 3B3A EF4B
# 030B, and the older 673F E406 1506 BB46 9A0E F857 BE39 7A52 B086 DA5A, which AWS still
# lists. A signature is what is trusted here, not a version: the package is AWS's latest.
MOUNT_S3_DEB = Pinned(
    "https://s3.amazonaws.com/mountpoint-s3-release/latest/x86_64/mount-s3.deb",
    "673FE4061506BB469A0EF857BE397A52B086DA5A 8AEFE705EBE329C0948C75A66F1C3B3AEF4B030B",
)
MOUNT_S3_KEYS = "https://s3.amazonaws.com/mountpoint-s3-release/public_keys/KEYS"
MISSING_MOUNT_S3 = (
    "Mountpoint for Amazon S3 (mount-s3) is not installed and could not be (the lines above "
    "say why): install it in the image (AWS's mount-s3.deb or .rpm), or give the nodes a "
    "route to the internet"
)


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
        argv += ["--cache", MOUNT_S3.cache_dir(entry), "--max-cache-size", str(cache_mb)]
    return [*argv, entry.bucket_name, entry.mount]


def storage_script(spec: ClusterSpec) -> str:
    """POSIX shell text, run as the SSH user (who has sudo on the AMIs dlvm uses), that
    installs Mountpoint where missing and mounts every storage entry; idempotent."""
    if not spec.storage:
        return ""
    lines = [
        "MOUNT_S3=$(command -v mount-s3 || true)",
        'if [ -z "$MOUNT_S3" ]; then',
        f"  {mount_s3_from_aws()} || {{ echo {shlex.quote(MISSING_MOUNT_S3)} >&2; exit 1; }}",
        "  MOUNT_S3=$(command -v mount-s3)",
        "fi",
        # Root runs mount-s3 (systemd); the files belong to the SSH user, whose jobs write them.
        "UID_=$(id -u); GID_=$(id -g)",
    ]
    cache_mb = fuse_mounts.cache_limit_mb(spec, aws_nodes(spec).disk_gb)
    for entry in spec.storage:
        lines.extend(MOUNT_S3.mount_lines(entry, mount_s3_argv(entry, cache_mb)))
    return "\n".join(lines) + "\n"


def mount_s3_from_aws() -> str:
    """A shell command that installs AWS's Mountpoint package as root once its signature is
    checked (`pinned_signed_file`): downloaded into a folder of root's, so that nothing
    changes it between the check and apt."""
    steps = [
        PINNED_DOWNLOADS.read_text(),
        "work=$(mktemp -d)",
        "trap 'rm -rf \"$work\"' EXIT",
        f"pinned_signed_file {shlex.quote(MOUNT_S3_DEB.source)} {shlex.quote(MOUNT_S3_KEYS)} "
        f'{shlex.quote(MOUNT_S3_DEB.expected)} "$work/mount-s3.deb"',
        'DEBIAN_FRONTEND=noninteractive apt-get install -y "$work/mount-s3.deb" >/dev/null',
    ]
    script = "set -e -o pipefail\n" + "\n".join(steps) + "\n"
    return f"sudo bash -c {shlex.quote(script)}"
