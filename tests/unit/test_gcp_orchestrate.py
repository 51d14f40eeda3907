"""The gcp glue of `up`, `plan` and `status`: the zone failover loop, host keys, states, prices.

Two stand-ins, both offline:
- the Compute Engine API is the loopback fake of gcp_fake.py, spoken to by the real
  google-cloud-compute clients (preflight, host keys, instance states);
- Terraform is `ScriptedTerraform`, which reads the tfvars dlvm wrote and pretends to apply
  them, failing in the zones a test says are short of capacity or quota with the error texts
  Terraform's google provider prints. It tests dlvm's decision loop (which zone next, what is
  deleted, what is kept), not Terraform or the google provider: those run only against a
  real project.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gcp_fake import API, FakeCompute, guest_attributes, running

from dlvm_cluster import providers
from dlvm_cluster.errors import ProvisionError, RemoteError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.prepare import converge_request
from dlvm_cluster.orchestrate.cluster.records import (
    applied_kind,
    applied_spec,
    load_inventory,
    save_applied,
    save_inventory,
)
from dlvm_cluster.orchestrate.jobs import supervise
from dlvm_cluster.orchestrate.jobs.node_loss import provider_lost
from dlvm_cluster.orchestrate.jobs.replace import replace_machines
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.jobs.supervise import Supervisor
from dlvm_cluster.progress import SilentProgress, TerraformEvent
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.base import Converge, NodeState
from dlvm_cluster.providers.gcp import gang
from dlvm_cluster.providers.gcp.converge import provision_gcp, replace_gcp_nodes
from dlvm_cluster.providers.gcp.plan import gcp_plan
from dlvm_cluster.providers.gcp.pricing import PRICES_AS_OF
from dlvm_cluster.providers.gcp.provider import ComputeEngine
from dlvm_cluster.providers.gcp.report import (
    cluster_instances,
    gcp_plan_notes,
    price_line,
)
from dlvm_cluster.providers.gcp.tfvars import DEFAULT_IMAGE_FAMILY
from dlvm_cluster.providers.terraformed import destroy_module
from dlvm_cluster.provision import terraform as terraform_engine
from dlvm_cluster.provision.terraform import EventSink, RunResult, parallelism_for
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState

P = "p"
REGION = "us-central1"
A, B, C = "us-central1-a", "us-central1-b", "us-central1-c"
ZONES = [A, B, C]
IMAGE = "pytorch-2-7-cu128-ubuntu-2204-nvidia-570-v20260301"


def stockout(zone: str) -> str:
    return (
        f"Error waiting for instance to create: The zone 'projects/{P}/zones/{zone}' does not "
        "have enough resources available to fulfill the request.  Try a different zone, or try "
        "again later."
    )


def stockout_suggesting(zone: str, suggested: str) -> str:
    return (
        stockout(zone) + f"\nA a2-highgpu-2g VM instance is currently unavailable in the {zone} "
        f"zone. Consider trying to create the VM in the {suggested} zones, or try again later."
    )


GLOBAL_QUOTA = (
    "Error waiting for instance to create: Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally."
)
PERMISSION = (
    "Error creating instance: googleapi: Error 403: Required 'compute.instances.create' "
    "permission for 'projects/p/zones/us-central1-a/instances/t-node-0', forbidden"
)


# -- the scripted Terraform ----------------------------------------------------------------


@dataclass(frozen=True)
class Apply:
    zone: str
    nodes: tuple[str, ...]
    replace: tuple[str, ...]


@dataclass
class Cloud:
    """What the scripted Terraform pretends exists, and how each zone answers.

    `capacity[zone]`: how many of the cluster's VMs the zone can hold (absent: unlimited);
    a create beyond it fails with `errors[zone]` (default: a stockout). VMs are kept in a
    terraform.tfstate of Terraform's format, as the real one is: dlvm reads it to see what a
    failed apply left. `events[zone]`: the events an apply there streams while it creates
    (Terraform's still-creating reports); `interrupted`: zones where Ctrl-C stops an apply
    once the VMs that fit are made.
    """

    capacity: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    events: dict[str, list[TerraformEvent]] = field(default_factory=dict)
    interrupted: set[str] = field(default_factory=set)
    applies: list[Apply] = field(default_factory=list)
    inits: int = 0

    def terraform(self, workdir: Path, on_event: EventSink | None = None) -> ScriptedTerraform:
        return ScriptedTerraform(self, workdir, on_event or (lambda event: None))

    def zones_tried(self) -> list[str]:
        return [a.zone for a in self.applies]


class ScriptedTerraform:
    def __init__(self, cloud: Cloud, workdir: Path, on_event: EventSink) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.on_event = on_event

    def init(self) -> None:
        self.cloud.inits += 1

    def apply(self, replace: list[str] | None = None) -> RunResult:
        tfvars = json.loads((self.workdir / "terraform.tfvars.json").read_text())
        zone, wanted = tfvars["zone"], tfvars["nodes"]
        if tfvars["flex_gang"]:  # the group and its template; the VMs come from a request
            self.cloud.applies.append(Apply(zone, tuple(wanted), ()))
            outputs = {"nodes": {}, "zone": zone, "flex_gang": f"dlvm-{tfvars['cluster_name']}"}
            return RunResult(0, outputs=outputs, summary={"add": 2, "change": 0, "remove": 0})
        replace = list(replace or [])
        self.cloud.applies.append(Apply(zone, tuple(wanted), tuple(replace)))
        vms = read_state(self.workdir)
        for name in list(vms):
            address = f'google_compute_instance.node["{name}"]'
            # Gone from the set, moved (zone is ForceNew), or replaced on request.
            if name not in wanted or vms[name] != zone or address in replace:
                del vms[name]
        failed = False
        for name in sorted(wanted, key=lambda n: wanted[n]["rank"]):
            if name in vms:
                continue
            if sum(1 for z in vms.values() if z == zone) >= self.cloud.capacity.get(zone, 99):
                failed = True
                continue
            vms[name] = zone
        write_state(self.workdir, vms)
        if wanted:
            for event in self.cloud.events.get(zone, []):
                self.on_event(event)
        if wanted and zone in self.cloud.interrupted:
            raise KeyboardInterrupt
        if failed:
            raise ProvisionError(
                "terraform apply failed: " + self.cloud.errors.get(zone, stockout(zone))
            )
        # As outputs.tf: the external address if the node has one, the login user rendered.
        nodes = {
            name: {
                "rank": wanted[name]["rank"],
                "ip": (
                    f"203.0.113.{10 + int(name[5:])}"
                    if tfvars["public_ip"]
                    else f"10.64.0.{2 + int(name[5:])}"
                ),
                "internal_ip": f"10.64.0.{2 + int(name[5:])}",
                "port": 22,
                "user": tfvars["ssh_user"],
                "zone": f"{API}/projects/{P}/zones/{zone}",
                "instance": f"t-{name}",
                "host_key": "",
            }
            for name in wanted
        }
        summary = {"add": len(wanted), "change": 0, "remove": 0}
        return RunResult(0, outputs={"nodes": nodes, "zone": zone}, summary=summary)


def read_state(workdir: Path) -> dict[str, str]:
    path = workdir / "terraform.tfstate"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {
        i["index_key"]: i["attributes"]["zone"]
        for r in data["resources"]
        if r["type"] == "google_compute_instance"
        for i in r["instances"]
    }


def write_state(workdir: Path, vms: dict[str, str]) -> None:
    instances = [
        {"index_key": name, "attributes": {"name": f"t-{name}", "zone": zone}}
        for name, zone in vms.items()
    ]
    resources: list[dict[str, Any]] = [
        {"mode": "managed", "type": "google_compute_network", "name": "cluster", "instances": []}
    ]
    if instances:
        resources.append(
            {
                "mode": "managed",
                "type": "google_compute_instance",
                "name": "node",
                "instances": instances,
            }
        )
    (workdir / "terraform.tfstate").write_text(json.dumps({"version": 4, "resources": resources}))


# -- fixtures ------------------------------------------------------------------------------


class Recorder(SilentProgress):
    """Keeps the stages and notes a run reports."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.stages: list[str] = []

    def stage(self, text: str) -> None:
        self.stages.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


def host_key(name: str) -> str:
    """A real ed25519 public key blob, one per node name (stable within the test run)."""
    if name not in _KEYS:
        public = Ed25519PrivateKey.generate().public_key()
        line = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        _KEYS[name] = line.decode().split()[1]
    return _KEYS[name]


_KEYS: dict[str, str] = {}


@pytest.fixture
def api() -> Iterator[FakeCompute]:
    with running() as fake:
        fake.project(P, {"GPUS_ALL_REGIONS": (64.0, 0.0)})
        fake.region(
            P,
            REGION,
            ZONES,
            {
                "CPUS": (2400.0, 0.0),
                "A2_CPUS": (2400.0, 0.0),
                "NVIDIA_A100_GPUS": (64.0, 0.0),
                "PREEMPTIBLE_NVIDIA_A100_GPUS": (64.0, 0.0),
            },
        )
        for zone in ZONES:
            fake.machine_type(P, zone, "a2-highgpu-2g", ("nvidia-tesla-a100", 2))
            fake.machine_type(P, zone, "a4-highgpu-8g", ("nvidia-b200", 8))
            fake.roce_profile(P, zone)
            for rank in range(6):
                name = f"node-{rank}"
                fake.set(
                    f"projects/{P}/zones/{zone}/instances/t-{name}/getGuestAttributes",
                    guest_attributes({"ssh-ed25519": host_key(name)}),
                )
        fake.dlvm_image_family(DEFAULT_IMAGE_FAMILY, IMAGE, 100)
        fake.accelerator_image_families()
        yield fake


@pytest.fixture
def state(tmp_path: Path) -> ClusterState:
    cluster = ClusterState("t", tmp_path / "t")
    cluster.create()
    cluster.ensure_key_pair()
    return cluster


def loaded_spec(
    count: int = 2,
    *,
    min_count: int | None = None,
    machine: str = "a2-highgpu-2g",
    ssh: str = "198.51.100.0/24",
    provider: str = "",
    extra: str = "",
) -> LoadedSpec:
    extra += f"  min_count: {min_count}\n" if min_count else ""
    text = (
        "name: t\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
        f"  zones: [{', '.join(ZONES)}]\n  allowed_ssh_cidrs: [{ssh}]\n{provider}"
        f"nodes:\n  count: {count}\n  machine_type: {machine}\n{extra}"
    )
    return load_spec_text(text, Path("/nowhere/t.yaml"))


def up(
    api: FakeCompute,
    state: ClusterState,
    cloud: Cloud,
    loaded: LoadedSpec,
    progress: Recorder,
    wait: float | None = None,
) -> tuple[Inventory, bool]:
    """What lifecycle.provision does for a gcp spec, with the fake API and Terraform."""
    request = converge_request(Cluster(state), loaded, progress, wait=wait)
    inventory, changed = provision_gcp(
        request, clients=api.clients(), terraform_factory=cloud.terraform
    )
    save_inventory(state, inventory)
    return inventory, changed


def running_cluster(
    api: FakeCompute, state: ClusterState, cloud: Cloud, loaded: LoadedSpec
) -> Inventory:
    """A cluster brought up by provision_gcp, recorded as applied, with every VM RUNNING."""
    inventory, _ = up(api, state, cloud, loaded, Recorder())
    save_applied(state, loaded)
    zone = cloud.applies[-1].zone
    for node in inventory.nodes:
        api.instance(P, zone, f"t-{node.name}", "RUNNING")
    return inventory


# -- the failover loop ---------------------------------------------------------------------


def test_stockout_in_one_zone_moves_the_cluster_to_the_next(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 1})
    progress = Recorder()
    inventory, changed = up(api, state, cloud, loaded_spec(), progress)

    assert changed
    assert cloud.applies == [
        Apply(A, ("node-0", "node-1"), ()),  # node-0 made, node-1 stocked out
        Apply(B, (), ()),  # node-0 deleted before zone b is tried
        Apply(B, ("node-0", "node-1"), ()),
    ]
    assert read_state(state.terraform_dir) == {"node-0": B, "node-1": B}
    assert progress.notes == [
        f"attempt 1, {A}: no capacity for this shape in {A} right now (stockout)",
        f"trying {B} next",
        f"deleting node-0 ({A}): before trying {B}",
    ]
    assert cloud.inits == 1
    assert [n.name for n in inventory.nodes] == ["node-0", "node-1"]
    assert inventory.env == {}


def test_the_zone_the_api_suggests_is_tried_first(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 0}, errors={A: stockout_suggesting(A, C)})
    up(api, state, cloud, loaded_spec(), Recorder())
    assert cloud.zones_tried() == [A, C]


def test_a_spot_vm_preempted_as_it_starts_moves_the_cluster_on(
    api: FakeCompute, state: ClusterState
) -> None:
    preempted = "Error waiting for instance to create: Instance failed to start due to preemption."
    cloud = Cloud(capacity={A: 1}, errors={A: preempted})
    progress = Recorder()
    inventory, _ = up(api, state, cloud, loaded_spec(), progress)
    assert cloud.zones_tried() == [A, B, B]
    assert [n.name for n in inventory.nodes] == ["node-0", "node-1"]
    assert progress.notes[:2] == [
        f"attempt 1, {A}: a Spot VM was preempted as it started: no Spot capacity there right now",
        f"trying {B} next",
    ]


LABELS = {"cluster": "t", "created-by": "dlvm"}


def test_a_vm_left_outside_terraforms_state_is_deleted_when_the_zone_is_left(
    api: FakeCompute, state: ClusterState
) -> None:
    # node-1 was preempted while Compute Engine created it: Terraform's create failed and its
    # state does not hold the VM, which stays in zone a, stopped.
    preempted = "Error waiting for instance to create: Instance failed to start due to preemption."
    cloud = Cloud(capacity={A: 1}, errors={A: preempted})
    api.instance(P, A, "t-node-1", "TERMINATED", spot=True, labels={**LABELS, "node": "node-1"})
    api.instance_operation(P, A, "t-node-1", "delete", waits=2)
    # Another cluster's VM and a VM without dlvm's labels in the same zone are not touched.
    api.instance(P, A, "u-node-1", "TERMINATED", labels={"cluster": "u", "created-by": "dlvm"})
    api.instance(P, A, "t-scratch", "TERMINATED", labels={"cluster": "t"})
    progress = Recorder()
    up(api, state, cloud, loaded_spec(), progress)

    assert cloud.zones_tried() == [A, B, B]
    deletes = [path for method, path, _ in api.requests if method == "DELETE"]
    assert deletes == [f"/compute/v1/projects/{P}/zones/{A}/instances/t-node-1"]
    [listing] = [q for m, path, q in api.requests if path.endswith(f"/zones/{A}/instances")]
    assert listing["filter"] == ['(labels.cluster = "t")']
    assert not any(path.endswith(f"/zones/{B}/instances") for _, path, _ in api.requests)
    assert api.respond("GET", f"/compute/v1/projects/{P}/zones/{A}/instances/t-node-1")[0] == 404
    for kept in ("u-node-1", "t-scratch"):
        assert api.respond("GET", f"/compute/v1/projects/{P}/zones/{A}/instances/{kept}")[0] == 200
    assert progress.notes[2:4] == [
        f"deleting node-0 ({A}): before trying {B}",
        f"deleted t-node-1 ({A}): a VM of this cluster outside Terraform's state (a Spot VM "
        "preempted while it was created stays behind, stopped)",
    ]


def test_vms_of_a_same_named_cluster_made_before_this_up_are_never_deleted(
    api: FakeCompute, state: ClusterState
) -> None:
    # Someone else's cluster `t` (another machine, another DLVM_HOME) already runs in zone a:
    # same names, same labels, made before this `up`. Terraform's create there fails.
    for name in ("t-node-0", "t-node-1"):
        api.instance(P, A, name, "RUNNING", labels=LABELS, created="2026-03-01T10:00:00.000-08:00")
    exists = (
        "Error creating instance: googleapi: Error 409: The resource "
        f"'projects/{P}/zones/{A}/instances/t-node-0' already exists, alreadyExists"
    )
    cloud = Cloud(capacity={A: 0}, errors={A: exists})
    progress = Recorder()
    with pytest.raises(ProvisionError):
        up(api, state, cloud, loaded_spec(), progress)

    assert [path for method, path, _ in api.requests if method == "DELETE"] == []
    for name in ("t-node-0", "t-node-1"):
        assert api.respond("GET", f"/compute/v1/projects/{P}/zones/{A}/instances/{name}")[0] == 200
    assert (
        f"left t-node-0 ({A}) alone: it carries this cluster's labels but was made before "
        "this `dlvm up` (another cluster of the same name?)"
    ) in progress.notes


def test_a_leftover_that_cannot_be_deleted_is_named_with_the_command(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 0})
    api.instance(P, A, "t-node-0", "TERMINATED", spot=True, labels=LABELS)
    api.error(
        f"projects/{P}/zones/{A}/instances/t-node-0",
        403,
        "Required 'compute.instances.delete' permission",
        "forbidden",
        method="DELETE",
    )
    progress = Recorder()
    up(api, state, cloud, loaded_spec(), progress)  # the cluster is made in b all the same
    assert cloud.zones_tried() == [A, B]
    assert progress.notes[-1].startswith(f"could not delete t-node-0 left in {A}: permission")
    assert progress.notes[-1].endswith(f"with gcloud compute instances delete t-node-0 --zone {A}")


def test_a_zone_whose_vms_cannot_be_listed_is_named_with_the_listing_command(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 0})
    api.error(
        f"projects/{P}/zones/{A}/instances",
        403,
        "Required 'compute.instances.list' permission",
        "forbidden",
    )
    progress = Recorder()
    up(api, state, cloud, loaded_spec(), progress)  # the cluster is made in b all the same
    assert cloud.zones_tried() == [A, B]
    assert progress.notes[-1].startswith(f"could not list the VMs of cluster t in {A}: permission")
    assert progress.notes[-1].endswith(
        f"look for VMs left there with gcloud compute instances list --zones {A} "
        "--filter=labels.cluster=t"
    )


# -- flex-start: waiting for capacity ------------------------------------------------------


def flex_start_spec(count: int = 1) -> LoadedSpec:
    """Flex-start nodes: one is a VM of its own; more are a gang (test_gcp_gang.py)."""
    return load_spec_text(
        loaded_spec(count).text + "  provisioning: flex-start\n  max_run_hours: 8\n",
        Path("/nowhere/t.yaml"),
    )


def still_creating(
    *elapsed: float, nodes: tuple[str, ...] = ("node-0", "node-1")
) -> list[TerraformEvent]:
    """Terraform's apply_progress reports for the nodes' creates, `elapsed` seconds in."""
    return [
        TerraformEvent("progress", f'google_compute_instance.node["{node}"]', "create", "", at)
        for at in elapsed
        for node in nodes
    ]


def lists(api: FakeCompute, zone: str) -> int:
    """How many instances.list calls the fake answered for `zone`."""
    return sum(1 for _, path, _ in api.requests if path.endswith(f"/zones/{zone}/instances"))


def test_a_flex_start_vm_waiting_for_capacity_is_shown_each_minute(
    api: FakeCompute, state: ClusterState
) -> None:
    # Dynamic Workload Scheduler finds the VM's capacity after two reads.
    api.flex_start_instance(P, A, "t-node-0", pending_reads=2, labels={**LABELS, "node": "node-0"})
    cloud = Cloud(events={A: still_creating(10, 50, 70, 75, 130, 370, nodes=("node-0",))})
    progress = Recorder()
    up(api, state, cloud, flex_start_spec(), progress, wait=2 * 3600)

    assert progress.notes == [
        "flex-start: each VM waits up to 2h for capacity from Dynamic Workload Scheduler",
        f"waiting for capacity in zone {A}, 1m: node-0 queued by Dynamic Workload Scheduler",
        f"waiting for capacity in zone {A}, 2m: node-0 queued by Dynamic Workload Scheduler",
    ]
    # One list a minute (1m, 2m, 6m), whatever the number of reports.
    assert lists(api, A) == 3
    tfvars = json.loads((state.terraform_dir / "terraform.tfvars.json").read_text())
    assert tfvars["create_timeout"] == "2h"


def test_standard_vms_are_not_watched_for_capacity(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(events={A: still_creating(70, 130)})
    progress = Recorder()
    up(api, state, cloud, loaded_spec(), progress)
    assert progress.notes == []
    assert lists(api, A) == 0


TIMED_OUT = (
    "Error waiting for instance to create: timeout while waiting for state to become 'DONE' "
    "(last state: 'RUNNING', timeout: 2h0m0s)"
)


def test_flex_start_capacity_not_found_within_the_wait_stops_and_deletes_the_waiting_vm(
    api: FakeCompute, state: ClusterState
) -> None:
    # The VM still waits when the wait ends: Terraform's provider drops it from its state,
    # but Compute Engine still holds it, PENDING.
    api.flex_start_instance(P, A, "t-node-0", pending_reads=99, labels={**LABELS, "node": "node-0"})
    api.instance_operation(P, A, "t-node-0", "delete")
    cloud = Cloud(capacity={A: 0}, errors={A: TIMED_OUT})
    progress = Recorder()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, flex_start_spec(), progress, wait=2 * 3600)

    error = caught.value
    assert error.exit_code == 3
    assert str(error.message) == (
        f"creating the nodes in {A} failed: the VMs were not created within the wait limit "
        "(2h0m0s); a flex-start VM waits there for capacity"
    )
    assert "a longer wait" in error.hint
    assert cloud.zones_tried() == [A]  # no other zone: the wait would start anew there
    assert read_state(state.terraform_dir) == {}
    assert [path for method, path, _ in api.requests if method == "DELETE"] == [
        f"/compute/v1/projects/{P}/zones/{A}/instances/t-node-0"
    ]


def test_ctrl_c_while_a_flex_start_vm_waits_leaves_nothing_behind(
    api: FakeCompute, state: ClusterState
) -> None:
    api.flex_start_instance(P, A, "t-node-0", pending_reads=99, labels={**LABELS, "node": "node-0"})
    api.instance_operation(P, A, "t-node-0", "delete")
    cloud = Cloud(capacity={A: 0}, interrupted={A})
    progress = Recorder()
    with pytest.raises(KeyboardInterrupt):
        up(api, state, cloud, flex_start_spec(), progress)

    # What `down` finds: a state without VMs, and no VM of the cluster outside it.
    assert read_state(state.terraform_dir) == {}
    assert api.respond("GET", f"/compute/v1/projects/{P}/zones/{A}/instances/t-node-0")[0] == 404
    assert progress.notes[-2:] == [
        f"interrupted: deleting the nodes this attempt made in {A}",
        f"deleted t-node-0 ({A}): a VM of this cluster outside Terraform's state (a Spot VM "
        "preempted while it was created stays behind, stopped)",
    ]


def test_zones_the_api_names_outside_the_spec_are_mentioned(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 0}, errors={A: stockout_suggesting(A, f"us-central1-f, {C}")})
    progress = Recorder()
    up(api, state, cloud, loaded_spec(), progress)
    assert cloud.zones_tried() == [A, C]
    assert progress.notes[1:] == [
        "Google says us-central1-f has capacity, but only the zones of provider.zones are tried",
        f"trying {C} next (Google says it has capacity)",
    ]


def test_global_quota_stops_at_once(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 1}, errors={A: GLOBAL_QUOTA})
    progress = Recorder()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded_spec(), progress)
    error = caught.value
    assert (
        error.message
        == f"creating the nodes in {A} failed: GPUS_ALL_REGIONS exceeded across all regions"
    )
    assert "https://console.cloud.google.com/iam-admin/quotas" in error.hint
    # No other zone is tried (the quota is the project's), and the node made is deleted.
    assert cloud.applies == [Apply(A, ("node-0", "node-1"), ()), Apply(A, (), ())]
    assert read_state(state.terraform_dir) == {}
    assert progress.notes[0] == f"attempt 1, {A}: GPUS_ALL_REGIONS exceeded across all regions"
    assert load_inventory(state) is None


def test_an_error_no_zone_can_fix_stops_at_once(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 0}, errors={A: PERMISSION})
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded_spec(), Recorder())
    assert "Required 'compute.instances.create' permission" in caught.value.message
    assert cloud.zones_tried() == [A]


def test_every_zone_stocked_out_lists_each_attempt(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 1, B: 1, C: 1})
    progress = Recorder()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded_spec(), progress)
    assert caught.value.message == (
        "no zone could host the cluster ("
        + "; ".join(f"{z}: no capacity for this shape in {z} right now (stockout)" for z in ZONES)
        + ")"
    )
    assert "nodes.min_count" in caught.value.hint
    # All or nothing: each zone's partial node is deleted, the last one's too.
    assert cloud.applies[-1] == Apply(C, (), ())
    assert read_state(state.terraform_dir) == {}
    assert [n for n in progress.notes if n.startswith("attempt")] == [
        f"attempt {i}, {z}: no capacity for this shape in {z} right now (stockout)"
        for i, z in enumerate(ZONES, 1)
    ]


def test_min_count_accepts_a_partial_cluster(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 3})
    progress = Recorder()
    inventory, _ = up(api, state, cloud, loaded_spec(4, min_count=2), progress)
    assert [n.name for n in inventory.nodes] == ["node-0", "node-1", "node-2"]
    assert cloud.applies[-1] == Apply(A, ("node-0", "node-1", "node-2"), ())
    assert f"accepting 3 of 4 nodes in {A} (nodes.min_count is 2)" in progress.notes[-1]


def test_min_count_not_reached_moves_on(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 1})
    inventory, _ = up(api, state, cloud, loaded_spec(4, min_count=2), Recorder())
    assert len(inventory.nodes) == 4
    assert cloud.zones_tried() == [A, B, B]


def test_growing_a_cluster_keeps_its_zone(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 0})
    running_cluster(api, state, cloud, loaded_spec(2))  # lands in zone b
    cloud.applies.clear()
    cloud.capacity[B] = 3
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded_spec(4), Recorder())
    assert caught.value.message == (
        f"adding nodes in {B} failed: no capacity for this shape in {B} right now (stockout)"
    )
    assert "moving them would recreate them all" in caught.value.hint
    # Zone b only; node-2 (made by this attempt) is deleted, node-0 and node-1 are kept.
    assert cloud.applies == [
        Apply(B, ("node-0", "node-1", "node-2", "node-3"), ()),
        Apply(B, ("node-0", "node-1"), ()),
    ]
    assert read_state(state.terraform_dir) == {"node-0": B, "node-1": B}


def test_growing_within_capacity_stays_in_the_zone(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 0})
    running_cluster(api, state, cloud, loaded_spec(2))
    cloud.applies.clear()
    inventory, changed = up(api, state, cloud, loaded_spec(3), Recorder())
    assert changed
    assert cloud.applies == [Apply(B, ("node-0", "node-1", "node-2"), ())]
    assert [n.name for n in inventory.nodes] == ["node-0", "node-1", "node-2"]


# -- inventory: host keys and GPUs from the API --------------------------------------------


def test_inventory_pins_host_keys_read_through_the_api(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 0})
    inventory, _ = up(api, state, cloud, loaded_spec(), Recorder())
    assert [(n.name, n.ip, n.user, n.host_key) for n in inventory.nodes] == [
        ("node-0", "203.0.113.10", "dlvm", f"ssh-ed25519 {host_key('node-0')}"),
        ("node-1", "203.0.113.11", "dlvm", f"ssh-ed25519 {host_key('node-1')}"),
    ]
    # Read from the zone the nodes ended up in, and saved with known_hosts.
    assert api.calls(f"/zones/{B}/instances/t-node-0/getGuestAttributes") == 1
    assert api.calls(f"/zones/{A}/instances/t-node-0/getGuestAttributes") == 0
    assert load_inventory(state) == inventory
    assert state.known_hosts.read_text().splitlines() == [
        f"203.0.113.10 ssh-ed25519 {host_key('node-0')}",
        f"203.0.113.11 ssh-ed25519 {host_key('node-1')}",
    ]
    assert inventory.gpus_per_node == 2


def forge_host_key(api: FakeCompute, zone: str, node: str) -> str:
    """What a process on the node can do: publish another key in its guest attributes."""
    forged = host_key(f"forged-{node}")
    api.set(
        f"projects/{P}/zones/{zone}/instances/t-{node}/getGuestAttributes",
        guest_attributes({"ssh-ed25519": forged}),
    )
    return forged


def test_a_running_nodes_pinned_key_is_kept_when_up_converges(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud(capacity={A: 0})
    before = running_cluster(api, state, cloud, loaded_spec(2))
    zone = cloud.applies[-1].zone
    forged = forge_host_key(api, zone, "node-0")
    reads = api.calls(f"/zones/{zone}/instances/t-node-0/getGuestAttributes")
    after, _ = up(api, state, cloud, loaded_spec(3), Recorder())  # grow 2 -> 3
    assert after.nodes[0].host_key == before.nodes[0].host_key
    assert forged not in state.known_hosts.read_text()
    assert api.calls(f"/zones/{zone}/instances/t-node-0/getGuestAttributes") == reads
    assert after.nodes[2].host_key == f"ssh-ed25519 {host_key('node-2')}"  # new: read


def test_a_recreated_vm_has_its_new_key_read(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud(capacity={A: 0})
    running_cluster(api, state, cloud, loaded_spec(2))
    zone = cloud.applies[-1].zone
    forged = forge_host_key(api, zone, "node-0")
    apply = cloud.terraform

    def recreating(workdir: Path, on_event: EventSink | None = None) -> ScriptedTerraform:
        made = apply(workdir, on_event)
        applied = made.apply

        def apply_and_recreate(replace: list[str] | None = None) -> RunResult:
            result = applied(replace)
            api.instance(P, zone, "t-node-0", "RUNNING", instance_id="5000000000000000003")
            return result

        made.apply = apply_and_recreate  # type: ignore[method-assign]
        return made

    request = converge_request(Cluster(state), loaded_spec(3), Recorder())
    after, _ = provision_gcp(request, clients=api.clients(), terraform_factory=recreating)
    assert after.nodes[0].host_key == f"ssh-ed25519 {forged}"  # another VM: its keys are new


def test_gpus_per_node_comes_from_preflight(api: FakeCompute, state: ClusterState) -> None:
    # dlvm's offline table does not know a4-highgpu-8g; the machine type from the API does.
    inventory, _ = up(
        api,
        state,
        Cloud(),
        loaded_spec(1, machine="a4-highgpu-8g", extra="  spot: true\n"),
        Recorder(),
    )
    assert inventory.gpus_per_node == 8


def test_jobs_on_a4_keep_their_own_library_path(api: FakeCompute, state: ClusterState) -> None:
    """The gIB plugin is found through the node's dynamic linker path (its boot script adds
    it there); a job's LD_LIBRARY_PATH stays what the image or the cluster file set."""
    inventory, _ = up(
        api,
        state,
        Cloud(),
        loaded_spec(1, machine="a4-highgpu-8g", extra="  spot: true\n"),
        Recorder(),
    )
    assert "LD_LIBRARY_PATH" not in inventory.env


def test_open_ssh_is_warned_loudly_during_up(api: FakeCompute, state: ClusterState) -> None:
    progress = Recorder()
    up(api, state, Cloud(), loaded_spec(ssh="0.0.0.0/0"), progress)
    assert progress.notes[0].startswith("WARNING: SSH is open to the whole internet (0.0.0.0/0")


# -- re-running up: healthy clusters and preempted nodes ----------------------------------


def test_healthy_unchanged_cluster_skips_preflight_and_terraform(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud()
    loaded = loaded_spec()
    before = running_cluster(api, state, cloud, loaded)
    applies, region_reads = len(cloud.applies), api.calls(f"/regions/{REGION}")
    inventory, changed = up(api, state, cloud, loaded, Recorder())
    assert (inventory, changed) == (before, False)
    assert len(cloud.applies) == applies
    assert api.calls(f"/regions/{REGION}") == region_reads


def applied_image(state: ClusterState) -> str:
    return str(json.loads((state.terraform_dir / "terraform.tfvars.json").read_text())["image"])


DLVM_IMAGES = "projects/deeplearning-platform-release/global/images"


def test_the_family_is_resolved_at_preflight_and_kept_for_the_clusters_life(
    api: FakeCompute, state: ClusterState
) -> None:
    """The VMs are created from the image the family is at the first `up` (every node the
    same), and keep it when the family moves on: a new image would recreate every VM, and a
    node added later would boot something else than the others."""
    cloud = Cloud()
    running_cluster(api, state, cloud, loaded_spec())
    assert applied_image(state) == f"{DLVM_IMAGES}/{IMAGE}"
    newer = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20261201"
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, newer, 100)
    progress = Recorder()
    inventory, _ = up(api, state, cloud, loaded_spec(3), progress)
    assert len(inventory.nodes) == 3
    assert applied_image(state) == f"{DLVM_IMAGES}/{IMAGE}"
    assert any(
        note.startswith(f"the nodes keep {IMAGE}; {newer} is the family's newest now")
        for note in progress.notes
    )
    # Another image in the file: resolved anew.
    other = "common-cu129-ubuntu-2404-nvidia-580"
    api.dlvm_image_family(other, f"{other}-v20261120", 100)
    up(api, state, cloud, loaded_spec(3, extra=f"  image: {other}\n"), Recorder())
    assert applied_image(state) == f"{DLVM_IMAGES}/{other}-v20261120"


def test_nodes_made_before_the_cluster_kept_its_image_keep_booting_the_family(
    api: FakeCompute, state: ClusterState
) -> None:
    """A cluster whose state has no record of the image (made before it was kept) was
    created from the family: naming the family's newest image now would recreate its nodes."""
    cloud = Cloud()
    running_cluster(api, state, cloud, loaded_spec())
    family = f"{DLVM_IMAGES}/family/{DEFAULT_IMAGE_FAMILY}"
    state.boot_image_path.unlink()
    tfvars = state.terraform_dir / "terraform.tfvars.json"
    tfvars.write_text(json.dumps({**json.loads(tfvars.read_text()), "image": family}))
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v2", 100)
    progress = Recorder()
    up(api, state, cloud, loaded_spec(3), progress)
    assert applied_image(state) == family
    assert not state.boot_image_path.exists()
    assert not any(note.startswith("the nodes keep") for note in progress.notes)
    # Another image in the file still resolves anew, and is kept from then on.
    other = "common-cu129-ubuntu-2404-nvidia-580"
    api.dlvm_image_family(other, f"{other}-v20261120", 100)
    up(api, state, cloud, loaded_spec(3, extra=f"  image: {other}\n"), Recorder())
    assert applied_image(state) == f"{DLVM_IMAGES}/{other}-v20261120"


def test_a_new_cluster_gets_the_familys_newest_image(api: FakeCompute, state: ClusterState) -> None:
    newer = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20261201"
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, newer, 100)
    up(api, state, Cloud(), loaded_spec(), Recorder())
    assert applied_image(state) == f"{DLVM_IMAGES}/{newer}"


def labels(api: FakeCompute, state: ClusterState, inventory: Inventory) -> dict[str, str]:
    """Each node's VM as the API says it (running, preempted, terminated, missing...)."""
    states = cluster_instances(state, inventory, clients=api.clients())
    return {name: instance.label for name, instance in states.items()}


def test_preempted_node_is_shown_and_recreated(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud()
    loaded = loaded_spec()
    inventory = running_cluster(api, state, cloud, loaded)
    api.instance(P, A, "t-node-1", "TERMINATED", spot=True, last_start="2026-03-01T10:00:00Z")
    api.preemptions(P, A, [("t-node-1", "2026-03-01T11:00:00Z")])
    assert labels(api, state, inventory) == {
        "node-0": "running",
        "node-1": "preempted",
    }
    progress = Recorder()
    _, changed = up(api, state, cloud, loaded, progress)
    assert changed
    assert cloud.applies[-1] == Apply(
        A, ("node-0", "node-1"), ('google_compute_instance.node["node-1"]',)
    )
    assert progress.notes[0] == "node-1 is preempted: it will be recreated"


class FakeBackedEngine(ComputeEngine):
    """The gcp provider speaking to the fake Compute API, with the scripted Terraform."""

    def __init__(self, state: ClusterState, api: FakeCompute, cloud: Cloud) -> None:
        super().__init__(state)
        self.api, self.cloud = api, cloud

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        found = cluster_instances(self.state, inventory, clients=self.api.clients())
        return {name: instance.node_state for name, instance in found.items()}

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        return replace_gcp_nodes(
            request, names, clients=self.api.clients(), terraform_factory=self.cloud.terraform
        )


def test_a_supervised_job_sees_a_preempted_node_and_replaces_it_alone(
    api: FakeCompute, state: ClusterState, tmp_path: Path
) -> None:
    cloud = Cloud()
    loaded = load_spec_text(
        loaded_spec(3).text + "job: {framework: none, command: train}\n",
        Path("/nowhere/t.yaml"),
    )
    inventory = running_cluster(api, state, cloud, loaded)
    record = JobRecord(
        "j1",
        "t",
        "none",
        "train",
        "~",
        ["node-0", "node-1", "node-2"],
        20001,
        0.0,
        local_logs=str(tmp_path / "logs"),
    )
    cluster = Cluster(state, provider=FakeBackedEngine(state, api, cloud))
    cluster.jobs.create(record)
    assert provider_lost(cluster, inventory, inventory.nodes) == {}
    api.instance(P, A, "t-node-1", "TERMINATED", spot=True, last_start="2026-03-01T10:00:00Z")
    api.preemptions(P, A, [("t-node-1", "2026-03-01T11:00:00Z")])
    lost = provider_lost(cluster, inventory, inventory.nodes)
    assert lost == {"node-1": "preempted"}
    applies = len(cloud.applies)
    reads = {"node-1": key_reads(api, "node-1")}
    others = key_reads(api, "node-0"), key_reads(api, "node-2")
    forge_host_key(api, A, "node-0")
    said: list[str] = []
    replaced = replace_machines(
        cluster, loaded, sorted(lost), {"node-1": "t-node-1"}, Recorder(), said.append
    )
    assert (key_reads(api, "node-0"), key_reads(api, "node-2")) == others  # kept, unread
    assert replaced.nodes[0].host_key == inventory.nodes[0].host_key
    assert len(cloud.applies) == applies + 1
    assert cloud.applies[-1].replace == ('google_compute_instance.node["node-1"]',)
    assert key_reads(api, "node-1") > reads["node-1"]  # the new VM's key, from the API
    assert [n.name for n in replaced.nodes] == ["node-0", "node-1", "node-2"]
    assert load_inventory(state) == replaced
    assert said[-1].startswith("node replaced: node-1 t-node-1 -> t-node-1 ")


def two_node_job(tmp_path: Path, job: str = "", **fields: Any) -> tuple[LoadedSpec, JobRecord]:
    """A two-node gcp spec whose job runs `train` (with `job` added to its section), and the
    record of that job running."""
    extra = f", {job}" if job else ""
    loaded = load_spec_text(
        loaded_spec(2).text + f"job: {{framework: none, command: train{extra}}}\n",
        Path("/nowhere/t.yaml"),
    )
    record = JobRecord(
        "j1",
        "t",
        "none",
        "train",
        "~",
        ["node-0", "node-1"],
        20001,
        0.0,
        local_logs=str(tmp_path / "logs"),
        **fields,
    )
    return loaded, record


@pytest.mark.parametrize("check", [True, False])
def test_job_check_runs_after_a_recovery_and_a_failing_cluster_fails_the_job(
    api: FakeCompute,
    state: ClusterState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    check: bool,
) -> None:
    loaded, record = two_node_job(tmp_path, f"check: {str(check).lower()}")
    names: list[str] = []

    def failing_check(checked: Cluster, progress: object) -> None:
        names.append(checked.name)
        raise RemoteError("1 of 2 node(s) failed the check: node-1: link 0.01 GB/s")

    monkeypatch.setattr(supervise, "require_healthy", failing_check)
    cluster = Cluster(state)
    cluster.jobs.create(record)
    supervisor = Supervisor(cluster, record, loaded, Recorder(), str)
    if not check:
        supervisor.check_after_recovery()
        assert names == [] and record.state != "failed"
        return
    with pytest.raises(RemoteError, match="node-1: link"):
        supervisor.check_after_recovery()
    assert names == [state.name]
    assert cluster.jobs.get("j1").state == "failed"  # written through the store
    assert record.state == "failed"
    assert record.events[-1]["text"].startswith("the check after the recovery failed: 1 of 2")


def test_a_check_crashing_on_node_output_after_a_recovery_fails_the_job(
    api: FakeCompute, state: ClusterState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's line that made the check raise RecursionError killed the detached supervisor,
    leaving the job stopped and "recovering" for ever."""
    loaded, record = two_node_job(tmp_path, "check: true", state="recovering")

    def crashing_check(checked: Cluster, progress: object) -> None:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(supervise, "require_healthy", crashing_check)
    cluster = Cluster(state)
    cluster.jobs.create(record)
    supervisor = Supervisor(cluster, record, loaded, Recorder(), str)
    with pytest.raises(RemoteError, match="check after the recovery failed: RecursionError"):
        supervisor.check_after_recovery()
    assert record.state == "failed" and record.ended is not None


def test_an_unexpected_error_in_the_supervisor_fails_the_job_instead_of_leaving_it(
    api: FakeCompute, state: ClusterState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, record = two_node_job(tmp_path)
    cluster = Cluster(state)
    cluster.jobs.create(record)
    supervisor = Supervisor(cluster, record, loaded, Recorder(), str)

    def broken_round() -> None:
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(supervisor, "_watch", broken_round)
    with pytest.raises(RemoteError, match="unexpected error \\(TypeError"):
        supervisor.run()
    assert record.state == "failed"
    assert record.events[-1]["text"].startswith("the supervisor failed: TypeError")


def stopped_cluster(
    api: FakeCompute, state: ClusterState, status: str = "TERMINATED"
) -> tuple[Cloud, LoadedSpec, Inventory]:
    """A running two-node cluster whose node-1 VM was then stopped (or suspended) by
    someone, not preempted."""
    cloud = Cloud()
    loaded = loaded_spec()
    inventory = running_cluster(api, state, cloud, loaded)
    api.instance(P, A, "t-node-1", status, last_start="2026-03-01T10:00:00Z")
    api.preemptions(P, A, [])
    return cloud, loaded, inventory


def key_reads(api: FakeCompute, node: str) -> int:
    return api.calls(f"/zones/{A}/instances/t-{node}/getGuestAttributes")


@pytest.mark.parametrize(("status", "verb"), [("TERMINATED", "start"), ("SUSPENDED", "resume")])
def test_a_stopped_or_suspended_node_is_started_not_replaced(
    api: FakeCompute, state: ClusterState, status: str, verb: str
) -> None:
    cloud, loaded, before = stopped_cluster(api, state, status)
    api.instance_operation(P, A, "t-node-1", verb, waits=2)
    reads = key_reads(api, "node-1")
    progress = Recorder()
    inventory, _ = up(api, state, cloud, loaded, progress)
    # Its disk and host keys are kept: no -replace, and the pinned key is not read again.
    assert cloud.applies[-1] == Apply(A, ("node-0", "node-1"), ())
    assert api.calls(f"/instances/t-node-1/{verb}") == 1
    assert api.calls(f"/operations/operation-1764686400000-{verb}-t-node-1/wait") == 2
    assert key_reads(api, "node-1") == reads
    assert inventory.nodes[1].host_key == before.nodes[1].host_key
    label = status.lower()
    doing = "starting" if verb == "start" else "resuming"
    assert progress.notes[0] == f"node-1 is {label}: {doing} it (its disk and host keys are kept)"
    assert labels(api, state, inventory) == {"node-0": "running", "node-1": "running"}


def test_a_node_that_will_not_start_keeps_its_disk_and_up_says_why(
    api: FakeCompute, state: ClusterState
) -> None:
    """No capacity to start a stopped GPU VM is common; recreating it would delete its disk
    and meet the same shortage in the same zone."""
    cloud, loaded, _ = stopped_cluster(api, state)
    stockout_error = {
        "errors": [
            {
                "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                "message": f"The zone 'projects/{P}/zones/{A}' does not have enough resources "
                "available to fulfill the request.  Try a different zone, or try again later.",
            }
        ]
    }
    api.instance_operation(P, A, "t-node-1", "start", error=stockout_error)
    applies = len(cloud.applies)
    progress = Recorder()
    with pytest.raises(ProvisionError) as stopped:
        up(api, state, cloud, loaded, progress)
    assert len(cloud.applies) == applies  # nothing replaced, nothing applied
    assert "could not start node-1 (no capacity" in stopped.value.message
    assert "keep their disks" in stopped.value.message
    assert progress.notes[1].startswith("starting node-1 failed: no capacity")


def test_a_started_node_recreated_by_terraform_has_its_keys_read(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud, loaded, _ = stopped_cluster(api, state)
    api.instance_operation(P, A, "t-node-1", "start")
    wait = (
        "POST",
        f"/compute/v1/projects/{P}/zones/{A}/operations/operation-1764686400000-start-t-node-1/wait",
    )
    started = api.effects[wait]

    def recreated(body: dict[str, Any]) -> None:  # a spec change made Terraform replace it
        started(body)
        api.instance(P, A, "t-node-1", "RUNNING", instance_id="5000000000000000001")

    api.effects[wait] = recreated
    reads = key_reads(api, "node-1")
    up(api, state, cloud, loaded, Recorder())
    assert key_reads(api, "node-1") == reads + 1


def test_a_refused_start_stops_up_and_replaces_nothing(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud, loaded, _ = stopped_cluster(api, state)
    applies = len(cloud.applies)
    api.error(
        f"projects/{P}/zones/{A}/instances/t-node-1/start",
        403,
        "Required 'compute.instances.start' permission for 'projects/p/zones/us-central1-a/"
        "instances/t-node-1'",
        "forbidden",
        method="POST",
    )
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded, Recorder())
    assert "permission denied reading start of t-node-1" in caught.value.message
    assert len(cloud.applies) == applies


def test_replace_nodes_recreates_only_those_in_the_cluster_zone(
    api: FakeCompute, state: ClusterState
) -> None:
    cloud = Cloud()
    loaded = loaded_spec(3)
    running_cluster(api, state, cloud, loaded)
    request = converge_request(Cluster(state), loaded, Recorder())
    inventory = replace_gcp_nodes(
        request, ["node-2"], clients=api.clients(), terraform_factory=cloud.terraform
    )
    assert cloud.applies[-1] == Apply(
        A, ("node-0", "node-1", "node-2"), ('google_compute_instance.node["node-2"]',)
    )
    assert [node.name for node in inventory.nodes] == ["node-0", "node-1", "node-2"]
    assert inventory.nodes[2].host_key == f"ssh-ed25519 {host_key('node-2')}"
    assert inventory.gpus_per_node == 2


def test_status_labels_from_the_api(api: FakeCompute, state: ClusterState) -> None:
    cloud = Cloud()
    inventory = running_cluster(api, state, cloud, loaded_spec(4))
    api.instance(P, A, "t-node-1", "TERMINATED", spot=True, last_start="2026-03-01T10:00:00Z")
    api.instance(P, A, "t-node-2", "TERMINATED", last_start="2026-03-01T10:00:00Z")
    api.routes.pop(("GET", f"/compute/v1/projects/{P}/zones/{A}/instances/t-node-3"))
    api.preemptions(P, A, [("t-node-1", "2026-03-01T11:00:00Z")])
    assert labels(api, state, inventory) == {
        "node-0": "running",
        "node-1": "preempted",
        "node-2": "terminated",  # stopped by someone: no preemption recorded
        "node-3": "missing",
    }
    # The same, in the words every provider uses (`status --json` node state).
    states = cluster_instances(state, inventory, clients=api.clients())
    assert {name: str(s.node_state) for name, s in states.items()} == {
        "node-0": "running",
        "node-1": "preempted",
        "node-2": "stopped",
        "node-3": "missing",
    }


# -- prices and warnings for plan and status -----------------------------------------------


def test_plan_notes_warn_and_price(state: ClusterState) -> None:
    notes = gcp_plan_notes(gcp_plan(loaded_spec(ssh="0.0.0.0/0").spec))
    assert notes[0].startswith("WARNING: SSH is open to the whole internet (0.0.0.0/0")
    # a2-highgpu-2g: host 1.47895 + 2 x 2.93391 per hour, on-demand; 2 nodes.
    assert notes[-1].startswith("price: $14.69/h for 2 x a2-highgpu-2g (on-demand; Spot $5.77/h)")
    assert PRICES_AS_OF in notes[-1]
    assert notes[-2] == (
        "capacity: standard; reservation: any matching one (Compute Engine's default); "
        "max run time: none"
    )
    assert notes[-3] == (
        "service account: dlvm-t@p.iam.gserviceaccount.com, made for this cluster; granted "
        "roles/logging.logWriter, roles/monitoring.metricWriter on the project"
    )
    assert gcp_plan_notes(gcp_plan(loaded_spec().spec)) == notes[-3:]


@pytest.mark.parametrize(
    ("nodes", "capacity", "price"),
    [
        (
            "  provisioning: flex-start\n  max_run_hours: 72\n",
            "capacity: flex-start (all nodes in one request, created together when Dynamic "
            "Workload Scheduler finds capacity for all); reservation: none; max run time: 72h, "
            "then Compute Engine deletes each VM",
            "price: not in dlvm's table for flex-start VMs (they have a price of their own, "
            "neither on-demand nor Spot)",
        ),
        (
            "  provisioning: reservation-bound\n"
            "  reservation: projects/capacity-owner/reservations/a100-pool\n",
            "capacity: reservation-bound; reservation: "
            "projects/capacity-owner/reservations/a100-pool; max run time: none",
            "price: not in dlvm's table for reservation-bound VMs (the reservation is billed, "
            "not the VMs)",
        ),
        (
            "  spot: true\n  reservation: none\n  max_run_hours: 8\n",
            "capacity: spot; reservation: none; max run time: 8h, then Compute Engine "
            "deletes each VM",
            "price: $5.77/h for 2 x a2-highgpu-2g (Spot; on-demand $14.69/h)",
        ),
        (
            "  reservation: any\n",
            "capacity: standard; reservation: any matching one; max run time: none",
            "price: $14.69/h for 2 x a2-highgpu-2g (on-demand; Spot $5.77/h)",
        ),
    ],
)
def test_plan_shows_provisioning_reservation_and_max_run_time(
    nodes: str, capacity: str, price: str
) -> None:
    text = loaded_spec().text + nodes
    notes = gcp_plan_notes(gcp_plan(load_spec_text(text, Path("/nowhere/t.yaml")).spec))
    assert notes[0].startswith("service account: ")
    assert notes[1] == capacity
    assert notes[2].startswith(price)


def test_price_line_says_when_the_table_has_no_row() -> None:
    line = price_line(gcp_plan(loaded_spec(machine="a4-highgpu-8g", extra="  spot: true\n").spec))
    assert line.startswith(
        "price: not in dlvm's table for a4-highgpu-8g with 8 x nvidia-b200 in us-central1"
    )
    assert PRICES_AS_OF in line


def test_status_price_counts_the_nodes_the_cluster_has(
    api: FakeCompute, state: ClusterState
) -> None:
    inventory = running_cluster(api, state, Cloud(capacity={A: 3}), loaded_spec(4, min_count=2))
    assert applied_kind(state) == "gcp"
    line = ComputeEngine(state, applied_spec(state).spec).status_price(len(inventory.nodes))
    assert line is not None
    assert line.startswith("price: $22.04/h for 3 x a2-highgpu-2g")


def test_status_asks_the_provider_of_the_applied_spec(tmp_path: Path) -> None:
    other = ClusterState("l", tmp_path / "l")
    other.create()
    local = load_spec_text(
        "name: l\nprovider: {kind: local}\nnodes: {count: 1}\n", tmp_path / "l.yaml"
    )
    assert applied_kind(other) is None  # never brought up
    save_applied(other, local)
    assert applied_kind(other) == "local"
    assert providers.for_spec(local.spec, other).status_price(1) is None


# -- private nodes, OS Login, the nodes' identity --------------------------------------------


def test_private_nodes_are_reached_through_their_iap_tunnel(
    api: FakeCompute, state: ClusterState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = tmp_path / "bin" / "gcloud"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tool.parent))
    loaded = loaded_spec(provider="  public_ip: false\n")
    inventory, _ = up(api, state, Cloud(), loaded, Recorder())
    assert [(n.ip, n.proxy) for n in inventory.nodes] == [
        (
            f"10.64.0.{2 + rank}",
            (
                "gcloud",
                "compute",
                "start-iap-tunnel",
                f"t-node-{rank}",
                "22",
                "--listen-on-stdin",
                f"--zone={A}",
                "--project=p",
                "--verbosity=warning",
            ),
        )
        for rank in range(2)
    ]
    # Recorded, and read back with its tunnel.
    assert load_inventory(state) == inventory
    # With external addresses: no tunnel.
    public, _ = up(api, state, Cloud(), loaded_spec(), Recorder())
    assert {n.proxy for n in public.nodes} == {()}


def test_os_login_puts_the_key_on_the_profile_and_logs_in_as_its_user(
    api: FakeCompute, state: ClusterState
) -> None:
    public_key = state.key_path.with_suffix(".pub").read_text().strip()
    api.os_login("alice@example.com", "alice_example_com", public_key, fingerprint="ab12")
    progress = Recorder()
    inventory, _ = up(api, state, Cloud(), loaded_spec(provider="  os_login: true\n"), progress)
    assert {n.user for n in inventory.nodes} == {"alice_example_com"}
    [(path, body)] = [(p, b) for p, b in api.posted if p.endswith(":importSshPublicKey")]
    assert path == "/v1/users/alice@example.com:importSshPublicKey"
    assert body == {"key": public_key}
    tfvars = json.loads((state.terraform_dir / "terraform.tfvars.json").read_text())
    assert (tfvars["os_login"], tfvars["ssh_user"]) == (True, "alice_example_com")
    assert "OS Login: logging in as alice_example_com" in " ".join(progress.notes)
    # A render from the state dir keeps what up found (no API call there).
    from dlvm_cluster.providers.gcp.converge import render_gcp

    assert render_gcp(loaded_spec().spec, state).tfvars["ssh_user"] == "alice_example_com"
    # down takes the key off the profile again.
    from dlvm_cluster.providers.gcp.oslogin import RECORD, remove_key

    assert remove_key(api.clients().rest, state) == ""
    assert ("DELETE", "/v1/users/alice@example.com/sshPublicKeys/ab12") in [
        (m, p) for m, p, _ in api.requests
    ]
    assert not (state.terraform_dir / RECORD).exists()


def test_os_login_comes_on_by_itself_where_an_org_policy_requires_it(
    api: FakeCompute, state: ClusterState
) -> None:
    public_key = state.key_path.with_suffix(".pub").read_text().strip()
    api.os_login("bob@example.com", "bob_example_com", public_key)
    api.org_policy(P, "compute.requireOsLogin", {"rules": [{"enforce": True}]})
    inventory, _ = up(api, state, Cloud(), loaded_spec(), Recorder())
    assert {n.user for n in inventory.nodes} == {"bob_example_com"}


def test_os_login_refused_says_what_to_enable(api: FakeCompute, state: ClusterState) -> None:
    api.routes[("GET", "/tokeninfo")] = [(200, {"email": "carol@example.com"})]
    cloud = Cloud()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, loaded_spec(provider="  os_login: true\n"), Recorder())
    assert caught.value.message.startswith(
        "OS Login refused the cluster's key for carol@example.com: HTTP 404"
    )
    assert "oslogin.googleapis.com" in caught.value.hint
    assert cloud.applies == []  # refused before anything was made


def test_plan_says_who_the_nodes_are_and_what_they_may_do() -> None:
    text = (
        "name: t\nprovider: {kind: gcp, project: p, region: us-central1, zones: [us-central1-a],"
        " public_ip: false}\nnodes: {count: 1}\n"
        "storage:\n  - {mount: /ckpt, bucket: gs://ckpt}\n  - {mount: /d, bucket: gs://data, "
        "read_only: true}\nautostop: {idle_minutes: 20, action: down}\n"
    )
    notes = gcp_plan_notes(gcp_plan(load_spec_text(text, Path("/nowhere/t.yaml")).spec))
    assert (
        "bucket gs://ckpt: roles/storage.objectUser for dlvm-t@p.iam.gserviceaccount.com" in notes
    )
    assert "bucket gs://data: roles/storage.objectViewer for dlvm-t@p.iam.gserviceaccount.com" in (
        notes
    )
    [down] = [n for n in notes if n.startswith("autostop action down")]
    assert "compute.instances.delete and compute.disks.delete" in down
    assert "instanceAdmin" not in " ".join(notes)
    [private] = [n for n in notes if n.startswith("private nodes")]
    assert "35.235.240.0/20" in private and "Cloud NAT" in private
    # A flex-start gang's nodes leave through their group, which alone they may change.
    gang = text.replace(
        "nodes: {count: 1}",
        "nodes: {count: 2, machine_type: g2-standard-4, provisioning: flex-start,"
        " max_run_hours: 8}",
    )
    notes = gcp_plan_notes(gcp_plan(load_spec_text(gang, Path("/nowhere/t.yaml")).spec))
    [down] = [n for n in notes if n.startswith("autostop action down")]
    assert "leaves its flex-start group" in down
    assert "compute.instanceGroupManagers.update, on this cluster's group alone" in down


def test_os_login_asks_gcloud_for_the_account_when_the_token_does_not_name_it(
    api: FakeCompute, state: ClusterState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """User credentials refreshed for the cloud-platform scope alone carry no email."""
    public_key = state.key_path.with_suffix(".pub").read_text().strip()
    api.os_login("dana@example.com", "dana_example_com", public_key)
    api.routes[("GET", "/tokeninfo")] = [(200, {"scope": "cloud-platform"})]
    tool = tmp_path / "bin" / "gcloud"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\n[ "$*" = "config get-value account" ] && echo dana@example.com\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tool.parent))
    inventory, _ = up(api, state, Cloud(), loaded_spec(provider="  os_login: true\n"), Recorder())
    assert {n.user for n in inventory.nodes} == {"dana_example_com"}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ProvisionError) as caught:
        up(api, state, Cloud(), loaded_spec(provider="  os_login: true\n"), Recorder())
    assert caught.value.message.startswith("cannot tell which Google account dlvm acts as")


# -- a flex-start gang: several flex-start nodes, all at once ------------------------------


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gang, "POLL_S", 0.0)


def resize_requests(api: FakeCompute) -> list[dict[str, Any]]:
    return [body for path, body in api.posted if path.endswith("/resizeRequests")]


def test_several_flex_start_nodes_are_one_request_for_all_of_them(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    """No VM of its own per node: the group gets one resize request naming every VM as dlvm
    names it, with the run duration; the nodes exist once it succeeds, together."""
    api.gang(P, A, "dlvm-t", states=["ACCEPTED", "ACCEPTED", "SUCCEEDED"])
    cloud = Cloud()
    progress = Recorder()
    inventory, changed = up(api, state, cloud, flex_start_spec(3), progress, wait=3600)

    [request] = resize_requests(api)
    assert [item["name"] for item in request["instances"]] == ["t-node-0", "t-node-1", "t-node-2"]
    assert request["requestedRunDuration"] == {"seconds": str(8 * 3600)}
    assert "resizeBy" not in request
    assert read_state(state.terraform_dir) == {}  # Terraform made the group, not the VMs
    tfvars = json.loads((state.terraform_dir / "terraform.tfvars.json").read_text())
    assert tfvars["flex_gang"] is True
    assert [node.name for node in inventory.nodes] == ["node-0", "node-1", "node-2"]
    assert {node.host_key for node in inventory.nodes} == {
        f"ssh-ed25519 {host_key(name)}" for name in ("node-0", "node-1", "node-2")
    }
    assert changed
    assert progress.notes[0] == (
        f"flex-start: asking Dynamic Workload Scheduler for 3 node(s) at once in {A} "
        "(node-0, node-1, node-2); nothing runs or bills until all have capacity"
    )


def test_a_gang_without_capacity_within_the_wait_is_withdrawn_with_nothing_made(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    for zone in ZONES:
        api.gang(P, zone, "dlvm-t", states=["ACCEPTED"])
    with pytest.raises(ProvisionError) as caught:
        up(api, state, Cloud(), flex_start_spec(2), Recorder(), wait=0.001)
    assert caught.value.message == (
        f"no capacity for all 2 flex-start node(s) in {C} within 0m: the request was "
        f"cancelled, no VM was created (zones tried: {A}, {B}, {C})"
    )
    requests = resize_requests(api)
    assert len(requests) == len(ZONES)
    for zone, request in zip(ZONES, requests, strict=True):
        name = request["name"]
        base = f"/compute/v1/projects/{P}/zones/{zone}/instanceGroupManagers/dlvm-t/resizeRequests"
        assert (f"{base}/{name}/cancel", {}) in api.posted
        assert ("DELETE", f"{base}/{name}", {}) in api.requests
    assert api.calls("/instances/t-node-") == 0


def test_a_new_gang_without_capacity_in_its_zone_moves_to_the_next_zone(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    """As VMs made one by one fail over, a gang whose request found no capacity within the
    wait is withdrawn in its zone and asked for in the next zone of provider.zones."""
    api.gang(P, A, "dlvm-t", states=["ACCEPTED"])
    api.gang(P, B, "dlvm-t", states=["SUCCEEDED"])
    cloud = Cloud()
    progress = Recorder()
    inventory, changed = up(api, state, cloud, flex_start_spec(2), progress, wait=0.001)
    assert cloud.zones_tried() == [A, B]
    first, second = resize_requests(api)
    base = f"/compute/v1/projects/{P}/zones/{A}/instanceGroupManagers/dlvm-t/resizeRequests"
    assert (f"{base}/{first['name']}/cancel", {}) in api.posted
    assert [item["name"] for item in second["instances"]] == ["t-node-0", "t-node-1"]
    assert {node.name for node in inventory.nodes} == {"node-0", "node-1"}
    assert json.loads((state.terraform_dir / "terraform.tfvars.json").read_text())["zone"] == B
    assert changed
    assert any(note.endswith(f"no VM was created; trying {B} next") for note in progress.notes)


def test_a_gang_google_reports_a_stockout_for_moves_on_and_says_every_zone_tried(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    for zone in ZONES:
        api.gang(P, zone, "dlvm-t", states=["ACCEPTED", "FAILED"])
    cloud = Cloud()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, flex_start_spec(2), Recorder(), wait=3600)
    assert cloud.zones_tried() == ZONES
    assert caught.value.message == (
        f"the request for 2 flex-start node(s) in {C} ended FAILED: no capacity "
        f"(zones tried: {A}, {B}, {C})"
    )
    assert api.calls("/instances/t-node-") == 0


def test_a_gang_that_has_nodes_stays_in_their_zone(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    """Moving would recreate the nodes it has: a larger gang that finds no capacity stops."""
    api.gang(P, A, "dlvm-t", states=["SUCCEEDED"])
    cloud = Cloud()
    running_cluster(api, state, cloud, flex_start_spec(2))
    api.gang(P, A, "dlvm-t", states=["FAILED"], members=["t-node-0", "t-node-1"])
    api.gang(P, B, "dlvm-t", states=["SUCCEEDED"])
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, flex_start_spec(3), Recorder(), wait=3600)
    assert set(cloud.zones_tried()) == {A}
    assert caught.value.message == (
        f"the request for 1 flex-start node(s) in {A} ended FAILED: no capacity"
    )


def test_a_gang_refused_for_another_reason_does_not_move(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    """Only missing capacity is worth another zone: a refusal stops where it happened."""
    api.gang(P, A, "dlvm-t", states=["FAILED"], failure=("QUOTA_EXCEEDED", "quota"))
    api.gang(P, B, "dlvm-t", states=["SUCCEEDED"])
    cloud = Cloud()
    with pytest.raises(ProvisionError) as caught:
        up(api, state, cloud, flex_start_spec(2), Recorder(), wait=3600)
    assert cloud.zones_tried() == [A]
    assert (
        caught.value.message == f"the request for 2 flex-start node(s) in {A} ended FAILED: quota"
    )


def test_a_gang_asks_only_for_the_nodes_it_lacks_and_lets_go_of_the_others(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    """A node gone (its run ended, or it was replaced) comes back alone, in one request; a
    node the cluster no longer has is deleted from the group."""
    for name in ("t-node-0", "t-node-1", "t-node-3"):
        api.instance(P, A, name, "RUNNING")
    api.gang(P, A, "dlvm-t", states=["SUCCEEDED"], members=["t-node-0", "t-node-1", "t-node-3"])
    inventory, _ = up(api, state, Cloud(), flex_start_spec(3), Recorder(), wait=3600)
    [request] = resize_requests(api)
    assert [item["name"] for item in request["instances"]] == ["t-node-2"]
    [(_, deleted)] = [(p, b) for p, b in api.posted if p.endswith("/deleteInstances")]
    assert deleted == {"instances": [f"zones/{A}/instances/t-node-3"]}
    assert len(inventory.nodes) == 3


def test_every_apply_creates_as_many_resources_at_once_as_the_cluster_has_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Terraform's default of 10 would create nodes 11 and on only after the first ones."""
    seen: list[list[str]] = []

    class Stream:
        def __iter__(self) -> Iterator[str]:
            return iter([])

        def finish(self) -> tuple[int, str]:
            return 0, ""

    def fake_open(argv: list[str]) -> Stream:
        seen.append(argv)
        return Stream()

    monkeypatch.setattr(terraform_engine, "_open", fake_open)
    terraform_engine.Terraform(tmp_path, parallelism=parallelism_for(16)).apply()
    terraform_engine.Terraform(tmp_path, parallelism=parallelism_for(16)).destroy()
    terraform_engine.Terraform(tmp_path).apply()
    assert "-parallelism=16" in seen[0] and "-parallelism=16" in seen[1]
    assert not any(arg.startswith("-parallelism") for arg in seen[2])
    assert [parallelism_for(n) for n in (1, 16, 500)] == [10, 16, 64]
    # `down` deletes them all at once too: its parallelism comes from the state dir's tfvars.
    state = ClusterState("t", tmp_path / "state")
    state.terraform_dir.mkdir(parents=True)
    (state.terraform_dir / "terraform.tfvars.json").write_text(
        json.dumps({"nodes": {f"node-{rank}": {"rank": rank} for rank in range(20)}})
    )
    destroy_module(state, SilentProgress())
    assert "-parallelism=20" in seen[-1] and "-destroy" in seen[-1]


def test_a_gang_node_is_replaced_by_deleting_it_and_asking_for_it_again(
    api: FakeCompute, state: ClusterState, no_pause: None
) -> None:
    api.gang(P, A, "dlvm-t", states=["SUCCEEDED"])
    loaded = flex_start_spec(2)
    up(api, state, Cloud(), loaded, Recorder(), wait=3600)
    request = converge_request(Cluster(state), loaded, Recorder(), wait=3600)
    inventory = replace_gcp_nodes(
        request, ["node-1"], clients=api.clients(), terraform_factory=Cloud().terraform
    )
    deleted = [b for p, b in api.posted if p.endswith("/deleteInstances")]
    assert deleted == [{"instances": [f"zones/{A}/instances/t-node-1"]}]
    _, again = resize_requests(api)
    assert [item["name"] for item in again["instances"]] == ["t-node-1"]
    assert [node.name for node in inventory.nodes] == ["node-0", "node-1"]


def test_a_private_gang_with_os_login_logs_in_as_the_profile_user_through_its_tunnels(
    api: FakeCompute,
    state: ClusterState,
    no_pause: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The gang's VMs are read from the API, not Terraform: they still get the login up found
    (the OS Login profile's user, not ssh_user) and, without external addresses, a tunnel."""
    tool = tmp_path / "bin" / "gcloud"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tool.parent))
    public_key = state.key_path.with_suffix(".pub").read_text().strip()
    api.os_login("alice@example.com", "alice_example_com", public_key)
    api.gang(P, A, "dlvm-t", states=["SUCCEEDED"])
    text = loaded_spec(2, provider="  public_ip: false\n  os_login: true\n").text
    loaded = load_spec_text(
        text + "  provisioning: flex-start\n  max_run_hours: 8\n", Path("/nowhere/t.yaml")
    )
    inventory, _ = up(api, state, Cloud(), loaded, Recorder(), wait=3600)
    assert {n.user for n in inventory.nodes} == {"alice_example_com"}
    assert [n.proxy[:4] for n in inventory.nodes] == [
        ("gcloud", "compute", "start-iap-tunnel", f"t-node-{rank}") for rank in range(2)
    ]
