"""Checks of a cluster file that span several fields (the models check one field each), as
(field path, message) pairs so that the loader can point at the line. `semantic_problems`
hold for every provider kind; a kind's own are its registry entry's `rules` (spec/kinds.py),
which may call the rules below that several kinds share (a bucket scheme, the spot synonym,
SSH ranges), none of them naming a kind."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dlvm_cluster.spec.model import ClusterSpec


def bucket_scheme_problems(
    spec: ClusterSpec, scheme: str, service: str
) -> list[tuple[tuple[str | int, ...], str]]:
    """A kind's rule for its `storage`: every bucket is of the one service its nodes mount
    (gs:// for Cloud Storage, s3:// for S3)."""
    return [
        (
            ("storage", index, "bucket"),
            f"this provider mounts {service} buckets: give {scheme}://BUCKET or "
            f"{scheme}://BUCKET/PREFIX",
        )
        for index, entry in enumerate(spec.storage)
        if not entry.bucket.startswith(f"{scheme}://")
    ]


def ssh_range_problems(cidrs: Sequence[str]) -> list[tuple[tuple[str | int, ...], str]]:
    """A cloud kind's rule: each of provider.allowed_ssh_cidrs is an address range."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, cidr in enumerate(cidrs):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(
                (
                    ("provider", "allowed_ssh_cidrs", index),
                    f"{cidr!r} is not an address range like 203.0.113.7/32",
                )
            )
    return problems


def spot_problems(
    spot_given: bool, spot: bool, provisioning: str | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """A cloud kind's rule: `spot: true` is a synonym of `provisioning: spot`, so the two
    keys must not say different things."""
    if not spot_given or provisioning is None or spot == (provisioning == "spot"):
        return []
    return [
        (
            ("nodes", "spot"),
            f"spot: {str(spot).lower()} contradicts provisioning: {provisioning} (spot: true "
            "means provisioning: spot); keep one of them",
        )
    ]


def semantic_problems(spec: ClusterSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that span several fields, as (field path, message) so the loader can point at them."""
    return _storage_problems(spec)


def _storage_problems(spec: ClusterSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Mounts that would hide one another, and more than one checkpoint mount."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: list[str] = []
    for index, entry in enumerate(spec.storage):
        for earlier in seen:
            if (
                entry.mount == earlier
                or entry.mount.startswith(earlier + "/")
                or (earlier.startswith(entry.mount + "/"))
            ):
                problems.append(
                    (
                        ("storage", index, "mount"),
                        f"{entry.mount} overlaps {earlier}: give each storage its own folder",
                    )
                )
        seen.append(entry.mount)
    marked = [index for index, entry in enumerate(spec.storage) if entry.checkpoint]
    for index in marked[1:]:
        problems.append(
            (
                ("storage", index, "checkpoint"),
                "only one storage mount can hold the checkpoints (DLVM_CHECKPOINT_DIR)",
            )
        )
    for index in marked:
        if spec.storage[index].read_only:
            problems.append(
                (
                    ("storage", index, "read_only"),
                    "the checkpoint mount must be writable",
                )
            )
    return problems
