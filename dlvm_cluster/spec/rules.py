"""Checks of a cluster file that span several fields (the models check one field each), as
(field path, message) pairs so that the loader can point at the line. These hold for every
provider kind; a kind's own are its registry entry's `rules` (spec/kinds.py)."""

from __future__ import annotations

from dlvm_cluster.spec.model import ClusterSpec


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
