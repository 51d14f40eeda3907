"""Why a whole cluster is stopped, as `status` says it: nodes that stopped themselves for
the same reason seconds apart (even across a minute) are one cluster stopped by it."""

from __future__ import annotations

from dlvm_cluster.orchestrate.cluster.report import cluster_stopped_by
from dlvm_cluster.orchestrate.nodes.commands import NodeStatus


def row(name: str, state: str, by: str = "", at: str = "") -> NodeStatus:
    return NodeStatus(
        name=name, rank=0, ip="10.0.0.2", port=22, user="root", reachable=False, error="",
        state=state, stopped_by=by, stopped_at=at,
    )  # fmt: skip


def test_nodes_stopped_by_autostop_a_second_apart_across_a_minute() -> None:
    rows = [
        row("node-1", "stopped", "autostop", "2026-12-05T12:04:00"),
        row("node-0", "stopped", "autostop", "2026-12-05T12:03:59"),
    ]
    assert cluster_stopped_by(rows) == "autostop at 12:03"


def test_no_single_reason_no_cluster_reason() -> None:
    assert cluster_stopped_by([]) is None
    running = [
        row("node-0", "stopped", "autostop", "2026-12-05T12:03:59"),
        row("node-1", "running"),
    ]
    assert cluster_stopped_by(running) is None
    mixed = [
        row("node-0", "stopped", "autostop", "2026-12-05T12:03:59"),
        row("node-1", "stopped", "user", "2026-12-05T12:05:00"),
    ]
    assert cluster_stopped_by(mixed) is None
    unmarked = [row("node-0", "stopped"), row("node-1", "stopped")]
    assert cluster_stopped_by(unmarked) is None
    assert cluster_stopped_by([row("node-0", "stopped", "user")]) == "user"
