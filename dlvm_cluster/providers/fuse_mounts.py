"""A bucket mounted on a node by a FUSE program that a systemd unit keeps running (so that it
comes back after a reboot or a stop): the unit's name and text, and the idempotent shell lines
that install it, restart it when it changed, start it and wait for the mount. The gcp provider
(gcsfuse) and the aws provider (Mountpoint for Amazon S3) differ only in the program, its
options and its package."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from dlvm_cluster.spec.model import ClusterSpec, StorageMount

UNIT_DIR = "/etc/systemd/system"
MOUNT_WAIT_SECONDS = 60
# A mount's cache lives on the root disk, which the system, the image and the jobs' own files
# share: all cached mounts together take at most 1/CACHE_SHARE_OF_DISK of it.
CACHE_SHARE_OF_DISK = 4


def cache_limit_mb(spec: ClusterSpec, disk_gb: int) -> int:
    """The cache size of each cached mount, in MiB: its part of the disk's share."""
    cached = sum(1 for entry in spec.storage if entry.cache)
    return disk_gb * 1024 // CACHE_SHARE_OF_DISK // max(1, cached)


@dataclass(frozen=True)
class FuseMounter:
    """One FUSE program: `program` is its name in an argv, `variable` the shell variable that
    holds its path on the node, `unit_prefix` names its units, `cache_root` holds caches."""

    program: str
    variable: str
    unit_prefix: str
    cache_root: str

    def unit_name(self, entry: StorageMount) -> str:
        """A mount's unit: named after its path (readable) plus a short digest (so that /a-b
        and /a/b never share one)."""
        readable = re.sub(r"[^a-z0-9]+", "-", entry.mount.lower()).strip("-")[:40]
        digest = hashlib.sha256(entry.mount.encode()).hexdigest()[:8]
        return f"{self.unit_prefix}-{readable}-{digest}.service"

    def cache_dir(self, entry: StorageMount, cache_root: str | None = None) -> str:
        """The mount's cache directory under `cache_root` (default: the program's)."""
        root = self.cache_root if cache_root is None else cache_root
        return f"{root}/{self.unit_name(entry).removesuffix('.service')}"

    def unit_text(self, entry: StorageMount, argv: Sequence[str]) -> str:
        """The unit file, with the program's variable and `$UID_`/`$GID_` (the SSH user's ids)
        left for the node's shell to fill in."""
        words = [
            f"${self.variable}"
            if word == self.program
            else word
            if "$" in word
            else shlex.quote(word)
            for word in argv
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

    def mount_lines(
        self, entry: StorageMount, argv: Sequence[str], cache_root: str | None = None
    ) -> list[str]:
        """Shell lines that put the unit in place (restarting a changed one), start it and
        wait until the mount is there, or show the unit's log and fail. `cache_root` may be a
        shell variable (`$NAME`) the script set before, as may words of `argv`."""
        unit = self.unit_name(entry)
        mount = shlex.quote(entry.mount)
        root = self.cache_root if cache_root is None else cache_root
        cache = self.cache_dir(entry, "")
        cache = f'"{root}"{cache}' if root.startswith("$") else shlex.quote(root + cache)
        # The unit text goes through an unquoted here-document, so the shell variables in it
        # ($UID_, $GID_, the program's and the script's) are filled in; nothing else in it
        # holds a `$` (the spec refuses one in mounts and buckets).
        return [
            f"sudo mkdir -p {mount} {cache}",
            "new=$(mktemp)",
            f'cat > "$new" <<DLVM_UNIT\n{self.unit_text(entry, argv)}DLVM_UNIT',
            f'if ! cmp -s "$new" {UNIT_DIR}/{unit}; then',
            f'  sudo install -m 0644 "$new" {UNIT_DIR}/{unit} && sudo systemctl daemon-reload',
            f"  sudo systemctl enable {unit} >/dev/null",
            f"  if mountpoint -q {mount}; then sudo systemctl restart {unit}; fi",
            "fi",
            'rm -f "$new"',
            f"sudo systemctl start {unit}",
            f"i=0; until mountpoint -q {mount}; do",
            f"  i=$((i+1)); if [ $i -gt {MOUNT_WAIT_SECONDS} ]; then",
            f"    echo '{self.program} did not mount {entry.bucket} at {entry.mount}:' >&2",
            f"    sudo journalctl -u {unit} -n 20 --no-pager >&2; exit 1",
            "  fi; sleep 1",
            "done",
        ]
