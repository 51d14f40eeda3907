"""The gcp provider in `up`: preflight, zone failover, host keys (what `plan` and `status`
add, warnings, prices and VM states, is in report.py).

`provision_gcp` answers Provider.provision (the inventory, and whether Terraform changed
anything):

    healthy and unchanged?  instance states from the API; all RUNNING and the same spec: done
    preflight               project, zones, machine and GPU types, quotas, image (warnings shown)
    failover loop           apply in one zone; on failure classify the error and either stop,
                            accept a partial set (nodes.min_count), or free the nodes this
                            attempt made and try the next zone of provider.zones
    host keys               read from guest attributes and pinned in the inventory, for new
                            VMs only: a VM recorded before keeps its pinned key while its id
                            is the same (guest attributes are writable from inside the VM)

The failover loop is zone_loop.py; leaving a zone also deletes the cluster's VMs there that
Terraform's state does not hold (leftovers.py).

A node that is down is brought back before preflight: a stopped or suspended VM (stopped by
its user, or by host maintenance) is started or resumed through the API, keeping its disk and
host keys; a preempted Spot node is recreated, a deleted one by a plain apply, a stopped one
with `apply -replace`, as is a VM that would not start. Terraform still runs afterwards: a
started VM may have a new external IP. Google's client library is imported only inside the
functions that call the API.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import Inventory, from_terraform_outputs, node_name
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import Converge
from dlvm_cluster.providers.gcp.config import gcp_config, gcp_nodes
from dlvm_cluster.providers.gcp.credentials import ComputeClients, compute_clients
from dlvm_cluster.providers.gcp.flexwait import capacity_watch
from dlvm_cluster.providers.gcp.gang import (
    GangNotFilled,
    fill_gang,
    gang_outputs,
    remove_members,
)
from dlvm_cluster.providers.gcp.hostkeys import (
    NodeRef,
    node_refs,
    node_refs_for,
    read_host_keys,
)
from dlvm_cluster.providers.gcp.identity import iap_tunnel_command
from dlvm_cluster.providers.gcp.instances import (
    InstanceState,
    Recovery,
    instance_id,
    replace_addresses,
    wake,
)
from dlvm_cluster.providers.gcp.leftovers import sweep_zone
from dlvm_cluster.providers.gcp.oslogin import register_key
from dlvm_cluster.providers.gcp.plan import gcp_plan
from dlvm_cluster.providers.gcp.preflight import PreflightReport, preflight
from dlvm_cluster.providers.gcp.report import node_states, warning_lines
from dlvm_cluster.providers.gcp.tfvars import (
    DEFAULT_CREATE_TIMEOUT_S,
    Login,
    gpus_per_node,
    image_in_use,
    instance_address,
    instance_name,
    node_image,
    record_image,
    resolved_image,
    state_tfvars,
)
from dlvm_cluster.providers.gcp.zone_loop import (
    TerraformFactory,
    ZoneFailover,
    rank_order,
)
from dlvm_cluster.providers.terraformed import applied_tfvars, with_host_keys
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.provision.terraform import (
    RunResult,
    Terraform,
    init_if_needed,
    parallelism_for,
)
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState

# -- up ------------------------------------------------------------------------------------


def render_gcp(
    spec: ClusterSpec,
    state: ClusterState,
    count: int | None = None,
    wait: float | None = None,
    login: Login | None = None,
    image: str | None = None,
) -> RenderedModule:
    """terraform/gcp with the spec's tfvars (and the key, zone, login and image the state dir
    holds)."""
    tfvars = state_tfvars(spec, state, count, wait, login, image)
    return RenderedModule("gcp", module_dir("gcp"), tfvars)


def resolve_login(
    spec: ClusterSpec, state: ClusterState, api: ComputeClients, report: PreflightReport
) -> Login:
    """OS Login where the spec asks for it or an organization policy requires it (the key put
    on the user's profile, the profile's POSIX name used), else the spec's ssh_user."""
    provider = gcp_config(spec)
    if not (provider.os_login or (provider.os_login is None and report.os_login_required)):
        return Login(os_login=False, user=provider.ssh_user)
    public_key = state.key_path.with_suffix(".pub").read_text()
    return Login(True, register_key(api.rest, state, provider.project, public_key))


def provision_gcp(
    request: Converge,
    *,
    clients: ComputeClients | None = None,
    terraform_factory: TerraformFactory | None = None,
) -> tuple[Inventory, bool]:
    """Create or converge the cluster's VMs; returns the inventory and whether Terraform ran
    changes. Terraform is skipped when every node is RUNNING and the spec is unchanged."""
    spec, state, progress = request.spec, request.state, request.progress
    provider = gcp_config(spec)
    api = clients if clients is not None else compute_clients()
    # Before this up writes its tfvars, which image_in_use reads for a cluster of before the
    # record.
    kept_image = image_in_use(state, node_image(gcp_plan(spec)))
    module = render_gcp(spec, state, wait=request.wait)
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
            pinned = _pins(previous, states)
            replace, started = _bring_back(request, api, home, states)
            pinned.update(started)
    progress.stage("preflight")
    report = preflight(spec, api, existing_nodes=len(previous.nodes) if previous else 0)
    for line in warning_lines(provider, report.warnings):
        progress.note(line)
    login = resolve_login(spec, state, api, report)
    if login.os_login:
        progress.note(f"OS Login: logging in as {login.user}, the key is on your OS Login profile")
    image = _boot_image(spec, state, kept_image, report, progress)
    module = render_gcp(spec, state, wait=request.wait, login=login, image=image)
    module.write(state.terraform_dir)
    if previous is not None and home not in provider.zones:
        where = f"zone {home}" if home else "an unknown zone"
        progress.note(
            f"the nodes are in {where}, which is not in provider.zones: they are recreated in "
            f"{report.zones[0]}"
        )
    make = terraform_factory or _terraform(spec)
    terraform = make(state.terraform_dir, capacity_watch(request, api))
    if gcp_nodes(spec).provisioning_model == "flex-start" and not module.tfvars["flex_gang"]:
        progress.note(
            f"flex-start: each VM waits up to {module.tfvars['create_timeout']} for capacity "
            "from Dynamic Workload Scheduler"
        )
    progress.stage("terraform")
    init_if_needed(terraform, module.source, state.terraform_dir)
    keep = [node.name for node in previous.nodes] if previous and home in provider.zones else []
    began = datetime.now(UTC)  # VMs of the cluster's name made before this are not this up's
    loop = ZoneFailover(
        spec,
        state,
        module,
        terraform,
        progress,
        report=report,
        keep=keep,
        # A gang's VMs are never in Terraform's state: the group holds them, not a sweep.
        sweep=None
        if module.tfvars["flex_gang"]
        else lambda zone, held: sweep_zone(api, provider.project, spec.name, zone, held, began),
        wait=request.wait,
    )
    # Moving zones recreates every node anyway: no -replace for addresses left behind.
    result, changed = loop.run(home if keep else None, replace if keep else [])
    tried: list[str] = []
    while True:
        try:
            result, added = _gang(request, api, result, user=login.user)
            break
        except GangNotFilled as unfilled:
            # A new gang that found no capacity moves on, as VMs made one by one do; a gang
            # that has nodes stays where they are.
            tried.append(str(result.outputs["zone"]))
            upcoming = [zone for zone in report.zones if zone not in tried]
            if keep or not unfilled.capacity or not upcoming:
                if len(tried) > 1:
                    unfilled.message += f" (zones tried: {', '.join(tried)})"
                raise
            progress.note(f"{unfilled.message}; trying {upcoming[0]} next")
            result, _ = loop.run(upcoming[0], [])
            changed = True
    return _inventory(request, api, result, report.gpus_per_node, pinned), changed or added


def _boot_image(
    spec: ClusterSpec,
    state: ClusterState,
    kept: str | None,
    report: PreflightReport,
    progress: Progress,
) -> str:
    """The image the VMs are created from: the one the cluster's VMs already boot (`kept`,
    image_in_use before this up), else the image preflight found the family to be now (its
    newest)."""
    ref = node_image(gcp_plan(spec))
    current = resolved_image(ref, report.image)
    if kept is None:
        record_image(state, ref, current)
        return current
    if kept not in (current, ref.path):
        progress.note(
            f"the nodes keep {kept.rsplit('/', 1)[-1]}; {report.image} is the family's newest "
            "now (a new cluster gets it: moving these nodes would recreate them)"
        )
    return kept


def _terraform(spec: ClusterSpec) -> functools.partial[Terraform]:
    """Terraform with a parallelism of the node count, so that all nodes are created at once."""
    return functools.partial(Terraform, parallelism=parallelism_for(spec.nodes.count))


def _gang(
    request: Converge,
    api: ComputeClients,
    result: RunResult,
    *,
    user: str,
    replace: Sequence[str] = (),
) -> tuple[RunResult, bool]:
    """A flex-start gang (the module's `flex_gang` output names its group): the nodes it lacks
    (`replace`: also those named), asked for all at once and waited for, then the `nodes`
    output read from the API, with `user` as the login (the module's `ssh_user`). Other
    clusters: `result` as it is."""
    group = str(result.outputs.get("flex_gang") or "")
    if not group:
        return result, False
    spec, progress = request.spec, request.progress
    project, zone = gcp_config(spec).project, str(result.outputs["zone"])
    names = [node_name(rank) for rank in range(spec.nodes.count)]
    if replace:
        progress.note(f"deleting {', '.join(replace)} from the flex-start gang to make them anew")
        remove_members(api, project, zone, group, [instance_name(spec.name, n) for n in replace])
    added = fill_gang(
        api,
        project,
        zone,
        group,
        spec.name,
        names,
        run_hours=gcp_nodes(spec).max_run_hours or 0,
        wait_s=request.wait or DEFAULT_CREATE_TIMEOUT_S,
        progress=progress,
    )
    nodes = gang_outputs(api, project, zone, spec.name, names, user)
    return dataclasses.replace(result, outputs={**result.outputs, "nodes": nodes}), bool(added)


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
    progress, project = request.progress, gcp_config(request.spec).project
    keys = {node.name: node.host_key for node in request.previous.nodes}
    refs = {ref.name: ref for ref in node_refs_for(request.previous.cluster, zone, states)}
    replace = replace_addresses(dict(states))
    pinned: dict[str, tuple[str, str]] = {}
    failed: list[str] = []
    for name in sorted(states, key=rank_order):
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
    module = render_gcp(spec, state, wait=request.wait)
    module.write(state.terraform_dir)
    pinned: dict[str, tuple[str, str]] = {}
    zone = _applied_zone(state)
    if request.previous is not None and zone is not None:
        others = tuple(node for node in request.previous.nodes if node.name not in names)
        kept = dataclasses.replace(request.previous, nodes=others)
        pinned = _pins(kept, node_states(api, gcp_config(spec).project, zone, kept))
    make = terraform_factory or _terraform(spec)
    terraform = make(state.terraform_dir, capacity_watch(request, api))
    progress.stage(f"terraform: replacing {', '.join(names)}")
    init_if_needed(terraform, module.source, state.terraform_dir)
    if module.tfvars["flex_gang"]:
        user = str(module.tfvars["ssh_user"])
        result, _ = _gang(request, api, terraform.apply(), user=user, replace=names)
    else:
        result = terraform.apply(replace=[instance_address(name) for name in names])
    gpus = request.previous.gpus_per_node if request.previous else gpus_per_node(gcp_plan(spec))
    return _inventory(request, api, result, gpus, pinned)


def _pins(previous: Inventory, states: Mapping[str, InstanceState]) -> dict[str, tuple[str, str]]:
    """node -> (pinned host key, VM id) for every recorded node whose VM is there now. Its
    key is not read again while the id stays the same: the same VM keeps its disk and so its
    keys, and the guest attributes the key would be read from are writable by any process
    on the node. A key the node's sshd really changed is refused at the first connection,
    with both fingerprints."""
    return {
        node.name: (node.host_key, states[node.name].instance_id)
        for node in previous.nodes
        if node.host_key and node.name in states and states[node.name].instance_id
    }


def _inventory(
    request: Converge,
    api: ComputeClients,
    result: RunResult,
    gpus: int,
    pinned: Mapping[str, tuple[str, str]] | None = None,
) -> Inventory:
    """The nodes Terraform reports, with the host keys each VM published through the API.

    `pinned`: node -> (host key, VM id) of the nodes recorded before (running, or started
    again by this `up`). While the VM id is the same, the disk and its keys are too, and the
    pinned key is kept unread; a new id (Terraform recreated it) means new keys, read as for
    any new VM.
    """
    request.progress.stage("reading host keys")
    outputs = result.outputs
    project = gcp_config(request.spec).project
    keys: dict[str, str] = {}
    unknown = []
    for ref in node_refs(outputs):
        key, vm_id = (pinned or {}).get(ref.name, ("", ""))
        if key and vm_id and instance_id(api, project, ref) == vm_id:
            keys[ref.name] = key
        else:
            unknown.append(ref)
    keys.update(read_host_keys(api, project, unknown))
    # No variables of the provider's: an A3/A4 node's NCCL plugin is found through the
    # dynamic linker's path and /etc/nccl.conf, which its boot script writes.
    inventory = from_terraform_outputs(
        request.spec.name, with_host_keys(outputs, keys), env={}, gpus_per_node=gpus
    )
    provider = gcp_config(request.spec)
    if provider.public_ip:
        return inventory
    return tunnelled(inventory, node_refs(outputs), project, provider.zones)


def tunnelled(
    inventory: Inventory, refs: Sequence[NodeRef], project: str, zones: Sequence[str]
) -> Inventory:
    """Nodes without external addresses, each reached through its IAP tunnel (their `ip`
    stays the internal address, which the nodes use among themselves). The tunnel is run on
    this machine, so it names the VM by dlvm's own name for it and a zone of the spec's,
    never by whatever text Terraform's outputs hold."""
    where = {ref.name: ref.zone for ref in refs}
    nodes = []
    for node in inventory.nodes:
        zone = where.get(node.name, "")
        if zone not in zones:
            raise ProvisionError(
                f"Terraform reports {node.name} in zone {zone!r}, which is not in provider.zones",
                hint="run `dlvm up` again; if it persists, `dlvm down` and `up` anew",
            )
        vm = instance_name(inventory.cluster, node.name)
        nodes.append(dataclasses.replace(node, proxy=iap_tunnel_command(vm, zone, project)))
    return dataclasses.replace(inventory, nodes=tuple(nodes))


def _applied_zone(state: ClusterState) -> str | None:
    zone = applied_tfvars(state).get("zone")
    return zone if isinstance(zone, str) and zone else None
