"""Storage: the gcsfuse mount the gcp provider gives nodes, the local provider's folders (never
outside DLVM_HOME/storage), and DLVM_CHECKPOINT_DIR in the nodes' environment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.providers import for_kind, for_spec, load_spec_text
from dlvm_cluster.providers.gcp.storage import (
    LOCAL_SSD,
    LOCAL_SSD_ARRAY,
    LOCAL_SSD_DEVICES,
    cache_limit_mb,
    gcsfuse_argv,
    local_ssd_cache_mb,
    storage_script,
    unit_name,
)
from dlvm_cluster.providers.local import storage_folder, storage_mount_script
from dlvm_cluster.spec.model import ClusterSpec, StorageMount
from dlvm_cluster.state import ClusterState

GCP = (
    "name: demo\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
    "  zones: [us-central1-a]\n  allowed_ssh_cidrs: [203.0.113.0/24]\nnodes: {count: 2}\n"
)
LOCAL = "name: demo\nprovider: {kind: local}\nnodes: {count: 2}\n"


def spec_of(head: str, storage: str) -> ClusterSpec:
    return load_spec_text(head + "storage:\n" + storage, Path("c.yaml")).spec


def test_gcsfuse_mounts_a_prefix_with_the_checkpoint_options() -> None:
    spec = spec_of(GCP, "  - {mount: /ckpt, bucket: gs://my-bucket/runs/r1}\n")
    argv = gcsfuse_argv(spec.storage[0], 51200)
    assert argv[:3] == ["gcsfuse", "--foreground", "--implicit-dirs"]
    assert argv[-2:] == ["my-bucket", "/ckpt"]
    joined = " ".join(argv)
    assert "--only-dir runs/r1" in joined
    assert "-o allow_other" in joined and "--uid $UID_ --gid $GID_" in joined
    assert "--file-cache-max-size-mb=51200" in joined
    assert "--file-cache-enable-parallel-downloads" in joined
    assert "--cache-dir /var/cache/dlvm-gcsfuse/dlvm-storage-ckpt-" in joined
    assert "-o ro" not in joined
    # Written from several nodes, read after a restart: no cached metadata, writes streamed.
    assert "--metadata-cache-ttl-secs=0" in argv and "--enable-streaming-writes" in argv


def test_gcsfuse_read_only_without_cache_or_prefix() -> None:
    spec = spec_of(
        GCP, "  - {mount: /data, bucket: gs://my-bucket, read_only: true, cache: false}\n"
    )
    argv = gcsfuse_argv(spec.storage[0], 51200)
    joined = " ".join(argv)
    assert "-o ro" in joined
    assert "--only-dir" not in joined and "--cache-dir" not in joined
    assert argv[-2:] == ["my-bucket", "/data"]
    # A dataset nobody writes keeps gcsfuse's metadata caching.
    assert "--metadata-cache-ttl-secs=0" not in argv and "--enable-streaming-writes" not in argv


def test_gcp_script_installs_a_systemd_unit_per_mount_and_waits_for_it() -> None:
    spec = spec_of(
        GCP,
        "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n"
        "  - {mount: /data, bucket: gs://other, read_only: true}\n",
    )
    script = storage_script(spec)
    assert "command -v gcsfuse" in script and "apt-get install -y gcsfuse" in script
    # Stock Ubuntu has no gcsfuse package: Google's repository is added before giving up.
    assert "https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" in script
    for entry in spec.storage:
        unit = unit_name(entry)
        assert f"sudo systemctl enable {unit}" in script
        assert f"sudo systemctl start {unit}" in script
        assert f"until mountpoint -q {entry.mount}" in script
    assert "ExecStart=$GCSFUSE --foreground" in script
    assert unit_name(spec.storage[0]) != unit_name(spec.storage[1])
    assert storage_script(load_spec_text(GCP, Path("c.yaml")).spec) == ""


def test_the_file_caches_together_keep_to_a_quarter_of_the_boot_disk() -> None:
    # Unlimited (-1), a dataset read once through a cached mount fills the boot disk.
    spec = spec_of(
        GCP.replace("nodes: {count: 2}", "nodes: {count: 2, disk_gb: 400}"),
        "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n"
        "  - {mount: /data, bucket: gs://other, read_only: true}\n"
        "  - {mount: /raw, bucket: gs://raw, cache: false}\n",
    )
    assert cache_limit_mb(spec) == 400 * 1024 // 4 // 2
    script = storage_script(spec)
    assert f"CACHE_ROOT=/var/cache/dlvm-gcsfuse; CACHE_MB={400 * 1024 // 8}" in script
    assert re.findall(r"--file-cache-max-size-mb=(\S+)", script) == ["$CACHE_MB"] * 2
    assert "mdadm" not in script  # no local SSD on this shape


def test_a_percent_sign_in_a_prefix_is_not_a_systemd_specifier() -> None:
    spec = spec_of(GCP, "  - {mount: /ckpt, bucket: gs://my-bucket/run%i}\n")
    # The gcsfuse install (its shell functions hold `%` of their own) is no unit's.
    from dlvm_cluster.providers.gcp.storage import gcsfuse_from_google

    script = storage_script(spec).replace(gcsfuse_from_google(), "")
    unit = [line for line in script.splitlines() if "=" in line and "%" in line]
    assert [line.split("=", 1)[0] for line in unit] == ["Description", "ExecStart"]
    assert all("%i" not in line.replace("%%", "") for line in unit)
    assert "--only-dir run%%i" in unit[1]


def test_unit_names_of_look_alike_mounts_differ() -> None:
    first = StorageMount(mount="/a-b", bucket="gs://my-bucket")
    second = StorageMount(mount="/a/b", bucket="gs://my-bucket")
    assert unit_name(first) != unit_name(second)


def test_the_gcp_script_is_valid_shell(tmp_path: Path) -> None:
    spec = spec_of(GCP, "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n")
    checked = subprocess.run(["sh", "-n", "-c", storage_script(spec)], capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_local_storage_lives_under_dlvm_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    spec = spec_of(LOCAL, "  - {mount: /ckpt, bucket: gs://my-bucket/runs/r1, read_only: true}\n")
    assert storage_folder(spec.storage[0]) == tmp_path / "storage" / "my-bucket" / "runs" / "r1"
    script = storage_mount_script(spec)
    assert "src=/run/dlvm/storage/my-bucket/runs/r1; dst=/ckpt;" in script
    assert 'mount -o remount,bind,ro "$dst"' in script
    checked = subprocess.run(["sh", "-n", "-c", script], capture_output=True)
    assert checked.returncode == 0


def test_a_local_folder_never_leaves_the_storage_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    # The spec refuses `..` in a prefix; a mount that did not come through it is refused too.
    for bucket in ("gs://my-bucket/../../etc", "gs://my-bucket/a/../../other-bucket"):
        escaping = StorageMount.model_construct(mount="/ckpt", bucket=bucket)
        with pytest.raises(UsageError, match="would leave the storage folder"):
            storage_folder(escaping)


def test_local_provider_makes_the_folders_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    spec = spec_of(LOCAL, "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n")
    script = for_spec(spec, ClusterState.for_name("demo")).storage_script()
    folder = tmp_path / "storage" / "my-bucket" / "r1"
    assert folder.is_dir() and script
    for path in (folder, folder.parent, folder.parent.parent):
        assert path.stat().st_mode & 0o777 == 0o700


def test_the_ssh_provider_refuses_storage() -> None:
    spec = spec_of(LOCAL, "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n")
    with pytest.raises(UsageError, match="does not mount storage"):
        for_kind("ssh", ClusterState.for_name("demo"), spec).storage_script()


def test_checkpoint_dir_reaches_the_environment_and_nothing_overrides_it() -> None:
    node = Node("node-0", 0, "10.0.0.1", 22, "root", "ssh-ed25519 AAAA")
    plain = Inventory("demo", (node,))
    assert "DLVM_CHECKPOINT_DIR" not in node_environment(plain, node, {})
    stored = Inventory("demo", (node,), checkpoint_dir="/ckpt")
    env = node_environment(stored, node, {"DLVM_CHECKPOINT_DIR": "/elsewhere"})
    assert env["DLVM_CHECKPOINT_DIR"] == "/ckpt"
    assert Inventory.from_json(stored.to_json()).checkpoint_dir == "/ckpt"


@pytest.mark.parametrize(
    "mount",
    [
        "/.",  # the node's root
        "/etc/.",  # /etc, spelt so that it is not /etc
        "/./usr",
        "/ckpt/./x",
        "/usr/lib",  # inside the system a node runs from
        "/etc/ssh",
        "/var/lib/dpkg",
        "/var/cache/dlvm-gcsfuse",  # where gcsfuse keeps its file cache
        "/run/dlvm",
        "/home/ubuntu",  # a user's home: it would hide ~/.ssh/authorized_keys
        "/home/dlvm/.ssh",  # the keys themselves; `up` writes the cluster's private key there
        "/home/dlvm/.ssh/",
        "/home/dlvm/.dlvm",  # the node files, with the secrets file
        "/home/dlvm/.dlvm/node-files",
        "/home/dlvm/.config/gcloud",
        "/root",
        "/root/.ssh",
        "/root/.dlvm",
        "/root/ckpt",
        "/var/lock",  # a link to /run/lock
        "/var/lock/x",
        "/var/mail",
    ],
)
def test_a_mount_over_the_system_however_spelt_is_refused(mount: str) -> None:
    with pytest.raises(ValueError, match="mount"):
        StorageMount(mount=mount, bucket="gs://my-bucket")


@pytest.mark.parametrize(
    "mount",
    ["/ckpt", "/mnt/data", "/home/ubuntu/ckpt", "/home/ubuntu/ckpt/.x", "/opt/x", "/tmp/ck"],
)
def test_a_mount_of_its_own_folder_is_taken(mount: str) -> None:
    assert StorageMount(mount=mount, bucket="gs://my-bucket").mount == mount


MEGA = GCP.replace(
    "nodes: {count: 2}", "nodes: {count: 2, machine_type: a3-megagpu-8g, spot: true}"
)
STAND_IN = """#!/bin/sh
name=${0##*/}
printf '%s' "$name" >>"$CALLS"; printf ' %s' "$@" >>"$CALLS"; printf '\\n' >>"$CALLS"
case "$name" in
sudo) exec "$@" ;;
install) cat "$3" >>"$CALLS.units" ;;
mountpoint) case "$2" in *localssd*) exit 1 ;; esac ;;
blkid|cmp) exit 1 ;;
esac
exit 0
"""


def run_storage_script(tmp_path: Path, spec: ClusterSpec, devices: int) -> tuple[str, str]:
    """The storage script under sh, its system paths moved under tmp_path, the machine's
    commands stand-ins that record their calls; (the calls, stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (
        "sudo",
        "mdadm",
        "mkfs.ext4",
        "mount",
        "blkid",
        "mountpoint",
        "mkdir",
        "systemctl",
        "install",
        "cmp",
        "journalctl",
        "gcsfuse",
    ):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    disks = tmp_path / "by-id"
    disks.mkdir()
    for index in range(devices):
        (disks / f"google-local-nvme-ssd-{index}").touch()
    script = storage_script(spec).replace(LOCAL_SSD_DEVICES, f"{disks}/google-local-nvme-ssd-*")
    script = script.replace(LOCAL_SSD_ARRAY, str(tmp_path / "md-dlvm-localssd"))
    calls = tmp_path / "calls"
    calls.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)}
    result = subprocess.run(["sh", "-e", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return calls.read_text(), result.stderr


def test_the_cache_goes_to_the_local_ssd_striped_where_the_shape_has_one(tmp_path: Path) -> None:
    spec = spec_of(MEGA, "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n")
    assert local_ssd_cache_mb(spec) == 16 * 375 * 1024 // 2
    calls, _ = run_storage_script(tmp_path, spec, devices=16)
    [create] = [line for line in calls.splitlines() if line.startswith("mdadm --create")]
    assert "--level=0 --raid-devices=16" in create
    assert create.count("google-local-nvme-ssd-") == 16
    assert f"mount -o discard,defaults {tmp_path}/md-dlvm-localssd {LOCAL_SSD}" in calls
    assert f"mkdir -p /ckpt {LOCAL_SSD}/dlvm-gcsfuse/dlvm-storage-ckpt-" in calls
    # The unit itself holds the cache's place and size, filled in on the node.
    unit = (tmp_path / "calls.units").read_text()
    assert f"--cache-dir {LOCAL_SSD}/dlvm-gcsfuse/dlvm-storage-ckpt-" in unit
    assert f"--file-cache-max-size-mb={16 * 375 * 1024 // 2}" in unit


def test_without_its_local_ssd_the_cache_stays_on_the_boot_disk(tmp_path: Path) -> None:
    spec = spec_of(MEGA, "  - {mount: /ckpt, bucket: gs://my-bucket/r1}\n")
    calls, stderr = run_storage_script(tmp_path, spec, devices=0)
    assert "mdadm" not in calls
    assert "mkdir -p /ckpt /var/cache/dlvm-gcsfuse/dlvm-storage-ckpt-" in calls
    assert "the gcsfuse cache stays on the boot disk" in stderr
