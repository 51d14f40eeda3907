"""Cloud Storage buckets on the nodes: one gcsfuse mount per `storage` entry, acting as the
nodes' service account, kept by a systemd unit so that it comes back after a reboot.

The options fit checkpoints: implicit directories (folders made by other tools show up),
`--only-dir` for a PREFIX, the file cache with parallel downloads (a restarting job reads its
checkpoint at disk speed the second time), `allow_other` with the SSH user's uid/gid (jobs run
as that user), and `-o ro` for a read-only mount. A writable mount is shared by writers on
several nodes and outlives a job's restart: its metadata is never cached (gcsfuse keeps it
forever on the A2/A3/A4 shapes by default, so a node would not see the checkpoint another one
just wrote), and files stream to the bucket as they are written instead of being staged whole
on the boot disk.

The file cache lives on the shape's bundled local SSD where it has one (A3 and A4: 6 to 12
TiB that nothing else uses): its NVMe disks are striped into one at LOCAL_SSD (again after
each start, since a stopped VM gets them back empty), and the caches may take half of it.
Elsewhere it lives on the boot disk, kept to a share of it (fuse_mounts.CACHE_SHARE_OF_DISK).
"""

from __future__ import annotations

import shlex

from dlvm_cluster.providers import fuse_mounts
from dlvm_cluster.providers.gcp import gpu_network, shapes
from dlvm_cluster.providers.gcp.config import gcp_nodes
from dlvm_cluster.providers.pinned import PINNED_DOWNLOADS
from dlvm_cluster.spec.model import ClusterSpec, StorageMount

CACHE_ROOT = "/var/cache/dlvm-gcsfuse"
GCSFUSE = fuse_mounts.FuseMounter("gcsfuse", "GCSFUSE", "dlvm-storage", CACHE_ROOT)
# Shapes with bundled local SSD (GiB); their -nolssd variants have none.
LOCAL_SSD_GB = {
    "a3-highgpu-8g": 16 * 375,
    "a3-megagpu-8g": 16 * 375,
    "a3-ultragpu-8g": 32 * 375,
    "a4-highgpu-8g": 32 * 375,
}
LOCAL_SSD = "/mnt/localssd"
LOCAL_SSD_DEVICES = "/dev/disk/by-id/google-local-nvme-ssd-*"
LOCAL_SSD_ARRAY = "/dev/md/dlvm-localssd"
CACHE_SHARE_OF_LOCAL_SSD = 2
# Google's apt repository of gcsfuse, for an image whose apt sources lack it (stock Ubuntu).
GCSFUSE_KEYRING = "/usr/share/keyrings/dlvm-gcsfuse.gpg"
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


def local_ssd_cache_mb(spec: ClusterSpec) -> int | None:
    """The same on the shape's local SSD; None for shapes without one."""
    machine = gcp_nodes(spec).machine_type or ""
    size = (
        None if machine.endswith("-nolssd") else LOCAL_SSD_GB.get(shapes.base_machine_type(machine))
    )
    if size is None:
        return None
    cached = sum(1 for entry in spec.storage if entry.cache)
    return size * 1024 // CACHE_SHARE_OF_LOCAL_SSD // max(1, cached)


def gcsfuse_argv(
    entry: StorageMount, cache_mb: int | str, cache_root: str = CACHE_ROOT
) -> list[str]:
    """The gcsfuse command line of one mount, in the foreground (systemd keeps it running),
    its file cache at most `cache_mb` MiB under `cache_root`. `$UID_`/`$GID_` stand for the
    SSH user's ids, filled in on the node (as may the cache's size and root)."""
    argv = ["gcsfuse", "--foreground", "--implicit-dirs", "-o", "allow_other"]
    argv += ["--uid", "$UID_", "--gid", "$GID_"]
    if entry.prefix:
        argv += ["--only-dir", entry.prefix]
    if entry.read_only:
        argv += ["-o", "ro"]
    else:
        # Writers on other nodes: see their files at once; stream writes to the bucket.
        argv += ["--metadata-cache-ttl-secs=0", "--enable-streaming-writes"]
    if entry.cache:
        argv += [
            "--cache-dir",
            GCSFUSE.cache_dir(entry, cache_root),
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
        f"|| {gcsfuse_from_google()} "
        f"|| {{ echo {shlex.quote(MISSING_GCSFUSE)} >&2; exit 1; }}",
        "  GCSFUSE=$(command -v gcsfuse)",
        "fi",
        # Root runs gcsfuse (systemd); the files belong to the SSH user, whose jobs write them.
        "UID_=$(id -u); GID_=$(id -g)",
        f"CACHE_ROOT={CACHE_ROOT}; CACHE_MB={cache_limit_mb(spec)}",
    ]
    on_local_ssd = local_ssd_cache_mb(spec)
    if on_local_ssd is not None and any(entry.cache for entry in spec.storage):
        lines.extend(_local_ssd_lines(on_local_ssd))
    for entry in spec.storage:
        lines.extend(
            GCSFUSE.mount_lines(
                entry, gcsfuse_argv(entry, "$CACHE_MB", "$CACHE_ROOT"), "$CACHE_ROOT"
            )
        )
    return "\n".join(lines) + "\n"


def gcsfuse_from_google() -> str:
    """A root shell command that adds Google's gcsfuse apt repository and installs gcsfuse
    from it, its signing key and package checked as the GPU network's downloads are (PINS:
    dlvm's record, else the node's first download, kept beside the boot script's)."""
    key = gpu_network.PINS["cloud-packages-key"]
    package = gpu_network.PINS["gcsfuse-package"]
    steps = [
        PINNED_DOWNLOADS.read_text(),
        f"pinned_apt_key {shlex.quote(key.source)} {shlex.quote(key.expected)} {GCSFUSE_KEYRING}",
        f'echo "deb [signed-by={GCSFUSE_KEYRING}] {gpu_network.CLOUD_APT} '
        'gcsfuse-$(lsb_release -cs) main" >/etc/apt/sources.list.d/dlvm-gcsfuse.list',
        "apt-get update >/dev/null 2>&1",
        f"pinned_apt_package {shlex.quote(package.source)} {shlex.quote(package.expected)} "
        ">/dev/null",
    ]
    script = "set -e -o pipefail\n" + "\n".join(steps) + "\n"
    return f"sudo env PIN_DIR={gpu_network.NODE_PIN_DIR} bash -c {shlex.quote(script)}"


def _local_ssd_lines(cache_mb: int) -> list[str]:
    """Stripe the shape's local NVMe SSDs into one ext4 file system at LOCAL_SSD (unless it is
    mounted already) and move the caches there; where that fails, they stay on the boot
    disk."""
    return [
        f"if mountpoint -q {LOCAL_SSD} || {{",
        f"  set -- {LOCAL_SSD_DEVICES}",
        '  [ -e "$1" ] && {',
        f"    [ -e {LOCAL_SSD_ARRAY} ] || sudo mdadm --create {LOCAL_SSD_ARRAY} "
        '--name=dlvm-localssd --level=0 --raid-devices=$# --force --run "$@" >/dev/null',
        f"  }} && {{ sudo blkid {LOCAL_SSD_ARRAY} >/dev/null || sudo mkfs.ext4 -F -q -m 0 "
        f"{LOCAL_SSD_ARRAY}; }} && sudo mkdir -p {LOCAL_SSD} && "
        f"sudo mount -o discard,defaults {LOCAL_SSD_ARRAY} {LOCAL_SSD}",
        "}; then",
        f"  CACHE_ROOT={LOCAL_SSD}/dlvm-gcsfuse; CACHE_MB={cache_mb}",
        "else",
        "  echo 'the local SSD could not be mounted: the gcsfuse cache stays on the boot disk' >&2",
        "fi",
    ]
