"""The JSON documents of `--json`, one function per command, and the one way they are printed.

Orchestrate returns results as data; what a script reads of them is decided here, so the
shape of every document (the contract in the README) is in one place. Light to import: the
result types are only named for type checking.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlvm_cluster.inventory import Inventory
    from dlvm_cluster.orchestrate.check.run import CheckReport
    from dlvm_cluster.orchestrate.cluster.lifecycle import PlanResult, StartResult, UpResult
    from dlvm_cluster.orchestrate.cluster.power import StopResult
    from dlvm_cluster.orchestrate.cluster.report import ClusterReport
    from dlvm_cluster.orchestrate.cluster.scale import ScaleResult
    from dlvm_cluster.orchestrate.jobs.store import JobRecord
    from dlvm_cluster.orchestrate.watch.metrics import Frame
    from dlvm_cluster.providers.base import Check
    from dlvm_cluster.remote.results import GroupResult, SyncResult

Document = dict[str, Any]


def print_json(data: Any) -> None:
    """The one document a --json command prints: plain stdout, never rich (no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def nodes(inventory: Inventory) -> list[Document]:
    """The nodes as `up --json` and `scale --json` show them (the fields of `status --json`
    that do not need a connection)."""
    return [
        {"name": n.name, "rank": n.rank, "ip": n.ip, "port": n.port, "user": n.user}
        for n in inventory.nodes
    ]


def up(result: UpResult) -> Document:
    """Enough for a script to reach the nodes without `status`."""
    return {
        "cluster": result.inventory.cluster,
        "changed": result.changed,
        "provisioned": result.provisioned,
        "seconds": round(result.seconds, 3),
        "nodes": nodes(result.inventory),
        "files_sent": result.files_sent,
        "setup": {
            "ran": list(result.setup.ran),
            "unchanged": list(result.setup.unchanged),
            # the nodes that got Horovod now: a key of the contract (launch/frameworks.py
            # keeps every framework's node software; only Horovod has any today)
            "horovod": list(result.setup.frameworks.get("horovod", ())),
        },
        # The GPU network jobs use (A3/A4): its transport, or plain NCCL with the nodes whose
        # setup failed; null for nodes without one.
        "gpu_network": {
            "transport": result.setup.gpu_network,
            "failed": list(result.setup.gpu_network_failed),
        }
        if result.setup.gpu_network
        else None,
        "started": list(result.started),
    }


def plan(result: PlanResult) -> Document:
    changes = [{"action": action, "address": address} for action, address in result.changes]
    data = {"cluster": result.cluster, "exists": result.exists, "changes": changes}
    storage = [
        {
            "mount": entry.mount,
            "bucket": entry.bucket,
            "read_only": entry.read_only,
            "checkpoint": entry.mount == result.checkpoint_mount,
        }
        for entry in result.storage
    ]
    return {**data, "summary": result.summary, "notes": list(result.notes), "storage": storage}


def job(record: JobRecord) -> Document:
    """A job as `launch --json` and `status --json` show it: the record file's own fields."""
    return dataclasses.asdict(record)


def status(report: ClusterReport) -> Document:
    """Every field of each node's status: a field added to NodeStatus shows up here too."""
    return {
        "cluster": report.cluster,
        "nodes": [dataclasses.asdict(node) for node in report.nodes],
        "jobs": [job(record) for record in report.jobs],
        "price": report.price,
        # why the nodes' `state` comes from SSH alone (the provider could not be asked)
        "provider_problem": report.provider_problem,
        # provisioning model, reservation, max run hours; null where the provider has no choice
        "capacity": report.capacity.to_json() if report.capacity else None,
        "autostop": report.autostop,
        "autostop_problem": report.autostop_problem,
        "stopped_by": report.stopped_by,
        "taken_down": report.taken_down,
        "usage": report.usage,
    }


def exec_(result: GroupResult) -> Document:
    """Per node: exit code, error, seconds, last lines (the agent's transport format too)."""
    return result.to_json()


def sync(results: Sequence[SyncResult]) -> list[Document]:
    return [dataclasses.asdict(result) for result in results]


def scale(result: ScaleResult) -> Document:
    """The counts, which nodes came and went, the nodes now."""
    return {
        "cluster": result.plan.cluster,
        "changed": bool(result.plan.add or result.plan.remove),
        "before": result.plan.current,
        "after": result.plan.target,
        "added": list(result.plan.add),
        "removed": list(result.plan.remove),
        "nodes": nodes(result.inventory),
        "jobs_joined": list(result.jobs_joined),
        "jobs_stopped": list(result.jobs_stopped),
        "seconds": round(result.seconds, 3),
    }


def launch(record: JobRecord) -> Document:
    return job(record)


def cancel(record: JobRecord, problems: dict[str, str]) -> Document:
    """Per node, whether any process of the job is left."""
    return {
        "cluster": record.cluster,
        "id": record.id,
        "state": record.state,
        "stopped": not any(problems.values()),
        "nodes": [
            {"name": node, "stopped": not problem, "problem": problem or None}
            for node, problem in problems.items()
        ],
    }


def check(result: Check) -> Document:
    """`detail` says what was found, `problem` and `fix` what is wrong."""
    return {
        "name": result.name,
        "ok": result.ok,
        "detail": result.detail if result.ok else None,
        "problem": None if result.ok else result.detail,
        "fix": None if result.ok else result.fix,
    }


def doctor(provider: str, checks: Sequence[Check]) -> Document:
    return {
        "provider": provider,
        "ok": all(result.ok for result in checks),
        "checks": [check(result) for result in checks],
    }


def down(cluster: str, seconds: float) -> Document:
    return {"cluster": cluster, "seconds": round(seconds, 3)}


def check_report(report: CheckReport) -> Document:
    """`check --json`: ok, and per node ok, what each check found, its link speeds (GB/s)
    and its problems; the all_reduce's bus bandwidth and the network it ran on (null: not
    measured)."""
    return {
        "cluster": report.cluster,
        "ok": report.ok,
        "backend": report.backend or None,
        "transport": report.transport or None,
        "bus_gbs": report.bus_gbs,
        "median_node_gbs": report.median_gbs,
        "notes": list(report.notes),
        "nodes": [
            {
                "name": node.name,
                "rank": node.rank,
                "ok": node.ok,
                "python": node.python,
                "gpus": node.gpus,
                "names": node.names,
                "send_gbs": node.send_gbs,
                "receive_gbs": node.receive_gbs,
                "problems": list(node.problems),
            }
            for node in report.nodes
        ],
    }


def stop(result: StopResult) -> Document:
    return {
        "cluster": result.cluster,
        "stopped": list(result.stopped),
        "seconds": round(result.seconds, 3),
    }


def start(result: StartResult) -> Document:
    return {
        "cluster": result.inventory.cluster,
        "started": list(result.started),
        "nodes": nodes(result.inventory),
        "seconds": round(result.seconds, 3),
    }


TOP_NODE_FIELDS = (
    "cpu_percent",
    "memory_used_bytes",
    "memory_total_bytes",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
)
TOP_GPU_FIELDS = (
    "index",
    "util_percent",
    "memory_used_bytes",
    "memory_total_bytes",
    "temperature_c",
    "power_w",
)


def top(frame: Frame) -> Document:
    """`top --json`: these fields and no others; a node that did not answer has nulls and no
    GPUs."""
    return {
        "nodes": [
            {
                "name": node.name,
                **{key: getattr(node, key) for key in TOP_NODE_FIELDS},
                "gpus": [{key: getattr(gpu, key) for key in TOP_GPU_FIELDS} for gpu in node.gpus],
            }
            for node in frame.nodes
        ]
    }
