"""The gcp provider in `up`: preflight, zone failover, host keys (what `plan` and `status`
add, warnings, prices and VM states, is in report.py).

`provision_gcp` answers Provider.provision (the inventory, and whether Terraform changed
anything):

    healthy and unchanged?  instance states from the API; all RUNNING and the same spec: done
    preflight               project, zones, machine and GPU types, quotas, image (warnings shown)
    failover loop           apply in one zone; on failure classify the error and either stop,
                            accept a partial set (nodes.min_count), or free the nodes this
                            attempt made and try the next zone of provider.zones
    host keys               read from guest attributes and pinned in the inventory

Moving zones frees the partial nodes with an apply of an empty (or, for a cluster that already
has nodes, the old) node set *before* the next zone is tried. Changing `zone` alone would
also replace them, since `zone` is ForceNew on google_compute_instance, but one apply would
then create in the new zone while the old nodes are still being deleted, so their GPUs could
still count against the region's quota; the separate apply frees them first and says so.

A node that is down is brought back before preflight: a stopped or suspended VM (stopped by
its user, or by host maintenance) is started or resumed through the API, keeping its disk and
host keys; a preempted Spot node is recreated, a deleted one by a plain apply, a stopped one
with `apply -replace`, as is a VM that would not start. Terraform still runs afterwards: a
started VM may have a new external IP. Google's client library is imported only inside the
functions that call the API.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import Inventory, from_terraform_outputs, node_name, node_rank
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import Converge
from dlvm_cluster.providers.gcp.credentials import ComputeClients, compute_clients
from dlvm_cluster.providers.gcp.failover import (
    FailoverDecision,
    FailoverKind,
    accepts_partial,
    classify_apply_error,
    exhausted_error,
    failure_error,
    next_zone,
)
from dlvm_cluster.providers.gcp.gpu_network import job_environment
from dlvm_cluster.providers.gcp.hostkeys import (
    node_refs,
    node_refs_for,
    read_host_keys,
    with_host_keys,
)
from dlvm_cluster.providers.gcp.instances import (
    InstanceState,
    Recovery,
    instance_id,
    replace_addresses,
    wake,
)
from dlvm_cluster.providers.gcp.preflight import PreflightReport, preflight
from dlvm_cluster.providers.gcp.report import applied_tfvars, node_states, warning_lines
from dlvm_cluster.providers.gcp.tfvars import (
    RESOURCE_ADDRESS,
    gcp_provider,
    gcp_tfvars,
    gpus_per_node,
    instance_address,
    node_shape,
    state_tfvars,
)
from dlvm_cluster.providers.terraformed import TFSTATE
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.provision.terraform import RunResult, Terraform, init_if_needed
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


class TerraformRunner(Protocol):
    """What the failover loop needs of Terraform (provision.terraform.Terraform has it)."""

    def init(self) -> None: ...

    def apply(self, replace: list[str] | None = None) -> RunResult: ...


TerraformFactory = Callable[[Path], TerraformRunner]


# -- up ------------------------------------------------------------------------------------


def render_gcp(spec: ClusterSpec, state: ClusterState, count: int | None = None) -> RenderedModule:
    """terraform/gcp with the spec's tfvars (and the key and zone the state dir holds)."""
    return RenderedModule("gcp", module_dir("gcp"), state_tfvars(spec, state, count))


def provision_gcp(
    request: Converge,
    *,
    clients: ComputeClients | None = None,
    terraform_factory: TerraformFactory | None = None,
) -> tuple[Inventory, bool]:
    """Create or converge the cluster's VMs; returns the inventory and whether Terraform ran
    changes. Terraform is skipped when every node is RUNNING and the spec is unchanged."""
    spec, state, progress = request.spec, request.state, request.progress
    provider = gcp_provider(spec)
    api = clients if clients is not None else compute_clients()
    module = render_gcp(spec, state)
    module_changed = module.write(state.terraform_dir)
    previous = request.previous
    home = _applied_zone(state) if previous is not None else None
    replace: list[str] = []
    pinned: dict[str, tuple[str, str]] = {}
    if previous is not None and home is not None:
        progress.stage("checking nodes")
        states = node_states(api, provider.project, home, previous)
        unchanged = (
            not module_changed and request.applied and len(previous.nodes) == spec.nodes.count
        )
        if unchanged and all(s.status == "RUNNING" for s in states.values()):
            return previous, False
        if home in provider.zones:  # else every node is recreated in another zone
            replace, pinned = _bring_back(request, api, home, states)
    progress.stage("preflight")
    report = preflight(spec, api, existing_nodes=len(previous.nodes) if previous else 0)
    for line in warning_lines(spec, report.warnings):
        progress.note(line)
    if previous is not None and home not in provider.zones:
        where = f"zone {home}" if home else "an unknown zone"
        progress.note(
            f"the nodes are in {where}, which is not in provider.zones: they are recreated in "
            f"{report.zones[0]}"
        )
    make = terraform_factory or (lambda workdir: Terraform(workdir, progress.terraform))
    terraform = make(state.terraform_dir)
    progress.stage("terraform")
    init_if_needed(terraform, module.source, state.terraform_dir)
    keep = [node.name for node in previous.nodes] if previous and home in provider.zones else []
    loop = _Failover(spec, state, module, terraform, progress, report=report, keep=keep)
    # Moving zones recreates every node anyway: no -replace for addresses left behind.
    result, changed = loop.run(home if keep else None, replace if keep else [])
    return _inventory(request, api, result, report.gpus_per_node, pinned), changed


def _bring_back(
    request: Converge, api: ComputeClients, zone: str, states: Mapping[str, InstanceState]
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Start or resume the nodes that are stopped or suspended, and say what happens to each
    node that is down. Returns the `-replace` addresses (preempted nodes) and, for each node
    started again, its pinned host key and VM id: the same VM keeps its disk and so its host
    keys.

    A node that will not start (no capacity to start it now, as is common for GPU VMs stopped
    by host maintenance) is never recreated: that would delete its disk, and the new VM would
    meet the same shortage in the same zone. `up` stops instead, saying so."""
    assert request.previous is not None
    progress, project = request.progress, gcp_provider(request.spec).project
    keys = {node.name: node.host_key for node in request.previous.nodes}
    refs = {ref.name: ref for ref in node_refs_for(request.previous.cluster, zone, states)}
    replace = replace_addresses(dict(states))
    pinned: dict[str, tuple[str, str]] = {}
    failed: list[str] = []
    for name in sorted(states, key=_rank_of):
        state = states[name]
        if state.needs_recreate:
            progress.note(f"{name} is {state.label}: it will be recreated")
            continue
        if state.recovery not in (Recovery.START, Recovery.RESUME):
            continue
        verb = "resuming" if state.recovery is Recovery.RESUME else "starting"
        progress.note(f"{name} is {state.label}: {verb} it (its disk and host keys are kept)")
        woken = wake(api, project, refs[name])
        if woken.gone:
            progress.note(f"{name}: {woken.failed}; it will be recreated")
        elif woken.failed:
            progress.note(f"{verb} {name} failed: {woken.failed}")
            failed.append(f"{name} ({woken.failed})")
        else:
            pinned[name] = (keys.get(name, ""), state.instance_id)
    if failed:
        raise ProvisionError(
            f"could not start {'; '.join(failed)} in {zone}; the stopped nodes keep their disks",
            hint="run `dlvm up` again later (GPU capacity comes and goes); to give a node's disk "
            "up and recreate it, delete its VM in the console or with gcloud, then run `dlvm up`",
        )
    return replace, pinned


def replace_gcp_nodes(
    request: Converge,
    names: Sequence[str],
    *,
    clients: ComputeClients | None = None,
    terraform_factory: TerraformFactory | None = None,
) -> Inventory:
    """Recreate the named nodes' VMs in the cluster's zone (`apply -replace`), the others
    untouched, and pin the new VMs' host keys."""
    spec, state, progress = request.spec, request.state, request.progress
    api = clients if clients is not None else compute_clients()
    module = render_gcp(spec, state)
    module.write(state.terraform_dir)
    make = terraform_factory or (lambda workdir: Terraform(workdir, progress.terraform))
    terraform = make(state.terraform_dir)
    progress.stage(f"terraform: replacing {', '.join(names)}")
    init_if_needed(terraform, module.source, state.terraform_dir)
    result = terraform.apply(replace=[instance_address(name) for name in names])
    gpus = request.previous.gpus_per_node if request.previous else gpus_per_node(spec)
    return _inventory(request, api, result, gpus)


def _inventory(
    request: Converge,
    api: ComputeClients,
    result: RunResult,
    gpus: int,
    pinned: Mapping[str, tuple[str, str]] | None = None,
) -> Inventory:
    """The nodes Terraform reports, with the host keys each VM published through the API.

    `pinned`: node -> (host key, VM id) of the nodes started again by this `up`. While the VM
    id is the same, the disk and its keys are too, and the pinned key is kept unread; a new id
    (Terraform recreated it) means new keys, read as for any new VM.
    """
    request.progress.stage("reading host keys")
    outputs = result.outputs
    project = gcp_provider(request.spec).project
    keys: dict[str, str] = {}
    unknown = []
    for ref in node_refs(outputs):
        key, vm_id = (pinned or {}).get(ref.name, ("", ""))
        if key and vm_id and instance_id(api, project, ref) == vm_id:
            keys[ref.name] = key
        else:
            unknown.append(ref)
    keys.update(read_host_keys(api, project, unknown))
    env = job_environment(node_shape(request.spec.nodes).machine_type)
    return from_terraform_outputs(
        request.spec.name, with_host_keys(outputs, keys), env=env, gpus_per_node=gpus
    )


class _Failover:
    """Apply in one zone after another until one takes the cluster, or stop with the reason.

    `keep`: the nodes the cluster already has (empty for a new cluster). They pin the cluster
    to its zone, and a failed attempt shrinks the node set back to them, never below.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        state: ClusterState,
        module: RenderedModule,
        terraform: TerraformRunner,
        progress: Progress,
        *,
        report: PreflightReport,
        keep: Sequence[str],
    ) -> None:
        self.spec = spec
        self.workdir = state.terraform_dir
        self.module = module
        self.terraform = terraform
        self.progress = progress
        self.zones = report.zones
        self.keep = list(keep)
        self.attempts: list[tuple[str, FailoverDecision]] = []
        self.suggested: list[str] = []  # zones the API said have capacity, latest first
        self.changed = False

    def run(self, home: str | None, replace: list[str]) -> tuple[RunResult, bool]:
        """Apply from `home` (the cluster's zone) or the first usable zone; returns the
        successful apply's result and whether anything changed."""
        zone: str | None = home or self.zones[0]
        while zone is not None:
            self._free_other_zones(zone)
            self._write(zone, None)
            try:
                result = self.terraform.apply(replace=replace)
            except ProvisionError as exc:
                self.changed = True  # even a failed create may have made nodes
                decision = classify_apply_error(exc.message)
                self.attempts.append((zone, decision))
                self.progress.note(f"attempt {len(self.attempts)}, {zone}: {decision.reason}")
                partial = self._accept_partial(zone, decision)
                if partial is not None:
                    return partial, True
                zone = self._next(zone, decision, exc)
                replace = []  # those addresses were for the nodes of the old zone
                continue
            return result, self.changed or _summary_changed(result)
        raise AssertionError("unreachable: _next raises when no zone is left")

    def _next(self, zone: str, decision: FailoverDecision, cause: ProvisionError) -> str:
        tried = [tried_zone for tried_zone, _ in self.attempts]
        self.suggested = [*decision.zones_hint, *self.suggested]
        listed = gcp_provider(self.spec).zones  # preflight already said why it dropped any
        elsewhere = [z for z in decision.zones_hint if z not in listed]
        if decision.try_next_zone and elsewhere:
            self.progress.note(
                f"Google says {', '.join(elsewhere)} {'has' if len(elsewhere) == 1 else 'have'} "
                "capacity, but only the zones of provider.zones are tried"
            )
        upcoming = next_zone(
            self.zones, tried, decision, keep_zone=bool(self.keep), suggested=self.suggested
        )
        if upcoming is not None:
            why = " (Google says it has capacity)" if upcoming in self.suggested else ""
            self.progress.note(f"trying {upcoming} next{why}")
            return upcoming
        # All or nothing: nodes this `up` made are not left running (and billing).
        self._release(zone, "the cluster could not be completed")
        if not decision.try_next_zone:
            raise failure_error(zone, decision) from cause
        if self.keep:
            raise ProvisionError(
                f"adding nodes in {zone} failed: {decision.reason}",
                hint=f"the cluster's nodes are in {zone}, and moving them would recreate them "
                "all; run `dlvm up` again later, or set nodes.min_count to accept fewer nodes",
            ) from cause
        raise exhausted_error(self.attempts) from cause

    def _accept_partial(self, zone: str, decision: FailoverDecision) -> RunResult | None:
        """With nodes.min_count, keep node-0..node-(k-1) when the zone made enough of them."""
        if self.spec.nodes.min_count is None or decision.kind is FailoverKind.FATAL:
            return None
        made = _nodes_in_state(self.workdir) or {}
        wanted = [node_name(rank) for rank in range(self.spec.nodes.count)]
        prefix: list[str] = []
        for name in wanted:
            if made.get(name) != zone:
                break
            prefix.append(name)
        # Only a prefix keeps names and ranks in step (node-0 is the head; scale adds at the
        # end); a node made beyond a gap is removed by the apply below.
        if len(prefix) == len(wanted) or not accepts_partial(self.spec, len(prefix)):
            return None
        self.progress.note(
            f"accepting {len(prefix)} of {len(wanted)} nodes in {zone} (nodes.min_count is "
            f"{self.spec.nodes.min_count}); `dlvm up` later adds the rest"
        )
        self._write(zone, prefix)
        return self.terraform.apply()

    def _free_other_zones(self, zone: str) -> None:
        """Delete nodes a failed attempt left in another zone before trying `zone`."""
        made = _nodes_in_state(self.workdir)
        if made is not None and all(where == zone for where in made.values()):
            return
        self._release(zone, f"before trying {zone}")

    def _release(self, zone: str, why: str) -> None:
        """Shrink the node set to the nodes the cluster had before this `up` (none for a new
        cluster). Skipped when the state shows nothing to remove."""
        made = _nodes_in_state(self.workdir)
        if made is None:  # unreadable state: shrink all the same, Terraform knows what is there
            keep, what = list(self.keep), "the nodes of the failed attempt"
        else:
            keep = [name for name in self.keep if name in made]
            extra = sorted(set(made) - set(keep), key=_rank_of)
            if not extra:
                return
            what = ", ".join(f"{name} ({made[name]})" for name in extra)
        self.progress.note(f"deleting {what}: {why}")
        self._write(zone, keep)
        try:
            self.terraform.apply()
        except ProvisionError as exc:
            raise ProvisionError(
                f"deleting the nodes of a failed attempt failed: {exc.message}",
                hint="run `dlvm up` again, or `dlvm down` to delete the whole cluster; "
                "until then those VMs keep running and billing",
            ) from exc
        self.changed = True

    def _write(self, zone: str, names: Sequence[str] | None) -> None:
        """The module's tfvars for `zone` with `names` (default: the spec's full node set)."""
        tfvars = gcp_tfvars(
            self.spec,
            public_key=str(self.module.tfvars.get("ssh_public_key", "")),
            zone=zone,
            names=None if names is None else list(names),
        )
        dataclasses.replace(self.module, tfvars=tfvars).write(self.workdir)


def _rank_of(name: str) -> tuple[int, str]:
    """node-10 after node-9."""
    rank = node_rank(name)
    return (1 << 30 if rank is None else rank, name)


def _summary_changed(result: RunResult) -> bool:
    """Whether an apply changed anything (True when Terraform sent no change summary)."""
    if not result.summary:
        return True
    return any(int(result.summary.get(key, 0) or 0) for key in ("add", "change", "remove"))


def _nodes_in_state(workdir: Path) -> dict[str, str] | None:
    """node name -> zone of the VMs Terraform's state holds; {} without a state file, None if
    the file cannot be read (then callers assume there may be nodes)."""
    path = workdir / TFSTATE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        found: dict[str, str] = {}
        kind, name = RESOURCE_ADDRESS.split(".")
        for resource in data.get("resources", []):
            if resource.get("mode") != "managed" or resource.get("type") != kind:
                continue
            if resource.get("name") != name:
                continue
            for instance in resource.get("instances", []):
                zone = str((instance.get("attributes") or {}).get("zone", ""))
                found[str(instance["index_key"])] = zone.rsplit("/", 1)[-1]
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _applied_zone(state: ClusterState) -> str | None:
    zone = applied_tfvars(state).get("zone")
    return zone if isinstance(zone, str) and zone else None
