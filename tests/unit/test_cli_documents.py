"""cli/documents.py: the --json documents, pinned field by field (the README's contract), and
`status` showing every field of NodeStatus without documents.py naming them."""

from __future__ import annotations

import dataclasses
import io
from collections import deque
from contextlib import redirect_stdout
from typing import Any

from dlvm_cluster.cli import documents
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster.doctor import Check
from dlvm_cluster.orchestrate.cluster.files import SetupReport
from dlvm_cluster.orchestrate.cluster.lifecycle import PlanResult, UpResult
from dlvm_cluster.orchestrate.cluster.report import ClusterReport
from dlvm_cluster.orchestrate.cluster.scale import ScalePlan, ScaleResult
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.nodes.commands import NodeStatus
from dlvm_cluster.remote.results import CommandResult, GroupResult, SyncResult
from dlvm_cluster.spec.model import StorageMount

INVENTORY = Inventory(
    "c",
    (
        Node("node-0", 0, "10.0.0.1", 22, "root", "ssh-ed25519 AAAA"),
        Node("node-1", 1, "10.0.0.2", 2222, "u", "ssh-ed25519 BBBB"),
    ),
)
NODES = [
    {"name": "node-0", "rank": 0, "ip": "10.0.0.1", "port": 22, "user": "root"},
    {"name": "node-1", "rank": 1, "ip": "10.0.0.2", "port": 2222, "user": "u"},
]
JOB = JobRecord("j1", "c", "none", "echo", "~", ["node-0"], 20001, 1.5, exit_codes={"node-0": 0})


def _job_fields() -> dict[str, Any]:
    return {
        "id": "j1",
        "cluster": "c",
        "framework": "none",
        "command": "echo",
        "workdir": "~",
        "nodes": ["node-0"],
        "port": 20001,
        "started": 1.5,
        "state": "running",
        "ended": None,
        "exit_codes": {"node-0": 0},
        "remote_log": "",
        "local_logs": "",
        "detached": False,
        "restarts": 0,
        "recoveries": 0,
        "events": [],
        "supervisor": "",
        "spans": [],
        "processes": 0,
    }


def test_up() -> None:
    result = UpResult(INVENTORY, True, 3, SetupReport(("node-0",), ("node-1",)), 12.34567)
    assert documents.up(result) == {
        "cluster": "c",
        "changed": True,
        "provisioned": True,
        "seconds": 12.346,
        "nodes": NODES,
        "files_sent": 3,
        "setup": {"ran": ["node-0"], "unchanged": ["node-1"], "horovod": []},
        "gpu_network": None,
        "started": [],
    }
    fell_back = SetupReport(
        (),
        (),
        gpu_network="NCCL over TCP sockets on the primary NIC",
        gpu_network_failed=("node-1 (load the dmabuf import helper)",),
    )
    assert documents.up(dataclasses.replace(result, setup=fell_back))["gpu_network"] == {
        "transport": "NCCL over TCP sockets on the primary NIC",
        "failed": ["node-1 (load the dmabuf import helper)"],
    }


def test_plan() -> None:
    storage = (
        StorageMount(mount="/data", bucket="gs://bkt", read_only=True),
        StorageMount(mount="/ckpt", bucket="gs://bkt/run1"),
    )
    result = PlanResult(
        "c",
        (("create", "a.b"), ("delete", "x")),
        "1 to add",
        False,
        notes=("a note",),
        storage=storage,
        checkpoint_mount="/ckpt",
    )
    assert documents.plan(result) == {
        "cluster": "c",
        "exists": False,
        "changes": [{"action": "create", "address": "a.b"}, {"action": "delete", "address": "x"}],
        "summary": "1 to add",
        "notes": ["a note"],
        "storage": [
            {"mount": "/data", "bucket": "gs://bkt", "read_only": True, "checkpoint": False},
            {"mount": "/ckpt", "bucket": "gs://bkt/run1", "read_only": False, "checkpoint": True},
        ],
    }


def test_scale() -> None:
    plan = ScalePlan("c", 1, 2, ("node-1",), ())
    assert documents.scale(ScaleResult(plan, INVENTORY, ("j1",), (), 5.55555)) == {
        "cluster": "c",
        "changed": True,
        "before": 1,
        "after": 2,
        "added": ["node-1"],
        "removed": [],
        "nodes": NODES,
        "jobs_joined": ["j1"],
        "jobs_stopped": [],
        "seconds": 5.556,
    }


def test_status_has_every_field_of_node_status() -> None:
    values: dict[str, Any] = {f.name: _sample(f.type) for f in dataclasses.fields(NodeStatus)}
    row = NodeStatus(**values)
    report = ClusterReport(
        "c",
        (row,),
        (JOB,),
        "$1.00/hour",
        provider_problem="no API",
        autostop="idle 30 min -> stop",
        autostop_problem="autostop is not active: x",
        stopped_by="autostop at 12:03",
        usage="usage so far: 1.0 node-hours running, 0.0 stopped",
    )
    document = documents.status(report)
    assert document == {
        "cluster": "c",
        "nodes": [dataclasses.asdict(row)],
        "jobs": [_job_fields()],
        "price": "$1.00/hour",
        "provider_problem": "no API",
        "capacity": None,
        "autostop": "idle 30 min -> stop",
        "autostop_problem": "autostop is not active: x",
        "stopped_by": "autostop at 12:03",
        "taken_down": None,
        "usage": "usage so far: 1.0 node-hours running, 0.0 stopped",
    }
    assert set(document["nodes"][0]) == {f.name for f in dataclasses.fields(NodeStatus)}


def _sample(annotation: object) -> object:
    """A value of a NodeStatus field's type (annotations are strings here)."""
    return {"int": 1, "bool": True}.get(str(annotation), "x")


def test_exec_is_the_group_result_transport_format() -> None:
    tail = deque(["last line"])
    failed = CommandResult("node-1", 1, None, "timed out", 2.0, deque(), timed_out=True)
    result = GroupResult((CommandResult("node-0", 0, 0, "", 1.23456, tail), failed), "node-1")
    assert documents.exec_(result) == result.to_json()
    assert documents.exec_(result)["nodes"][1] == {
        "name": "node-1",
        "rank": 1,
        "exit_code": None,
        "error": "timed out",
        "timed_out": True,
        "seconds": 2.0,
        "tail": [],
    }


def test_sync_launch_cancel_doctor_down() -> None:
    synced = SyncResult("node-0", 1, 2, 0, 3, 0.5, "", ["f"])
    assert documents.sync([synced]) == [
        {
            "node": "node-0",
            "sent_files": 1,
            "sent_bytes": 2,
            "deleted": 0,
            "unchanged": 3,
            "seconds": 0.5,
            "error": "",
            "sent": ["f"],
            "held_back": [],
        }
    ]
    assert documents.launch(JOB) == _job_fields()
    assert documents.cancel(JOB, {"node-0": "", "node-1": "pid 7 left"}) == {
        "cluster": "c",
        "id": "j1",
        "state": "running",
        "stopped": False,
        "nodes": [
            {"name": "node-0", "stopped": True, "problem": None},
            {"name": "node-1", "stopped": False, "problem": "pid 7 left"},
        ],
    }
    checks = [Check("root", True, "uid 0"), Check("sshd", False, "missing", "install it")]
    assert documents.doctor("local", checks) == {
        "provider": "local",
        "ok": False,
        "checks": [
            {"name": "root", "ok": True, "detail": "uid 0", "problem": None, "fix": None},
            {
                "name": "sshd",
                "ok": False,
                "detail": None,
                "problem": "missing",
                "fix": "install it",
            },
        ],
    }
    assert documents.down("c", 1.23456) == {"cluster": "c", "seconds": 1.235}


def test_print_json_is_one_indented_document() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        documents.print_json({"a": [1], "b": None})
    assert out.getvalue() == '{\n  "a": [\n    1\n  ],\n  "b": null\n}\n'
