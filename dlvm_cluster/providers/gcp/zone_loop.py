"""The zone failover loop of `up`: apply in one zone after another until one takes the
cluster, or stop with the reason (what to do on each error is failover.py's decision).

Moving zones frees the partial nodes with an apply of an empty (or, for a cluster that already
has nodes, the old) node set *before* the next zone is tried. Changing `zone` alone would
also replace them, since `zone` is ForceNew on google_compute_instance, but one apply would
then create in the new zone while the old nodes are still being deleted, so their GPUs could
still count against the region's quota; the separate apply frees them first and says so.
Leaving a zone also deletes, through the API, the cluster's VMs there that Terraform's state
does not hold (leftovers.py): a Spot VM preempted while being created may stay, stopped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import node_name, node_rank
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.gcp.config import gcp_config, gcp_nodes
from dlvm_cluster.providers.gcp.failover import (
    FailoverDecision,
    FailoverKind,
    accepts_partial,
    classify_apply_error,
    exhausted_error,
    failure_error,
    next_zone,
)
from dlvm_cluster.providers.gcp.leftovers import Swept
from dlvm_cluster.providers.gcp.preflight import PreflightReport
from dlvm_cluster.providers.gcp.tfvars import (
    RESOURCE_ADDRESS,
    Login,
    gcp_tfvars,
    instance_name,
)
from dlvm_cluster.providers.terraformed import TFSTATE
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.provision.terraform import EventSink, RunResult
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


class TerraformRunner(Protocol):
    """What the failover loop needs of Terraform (provision.terraform.Terraform has it)."""

    def init(self) -> None: ...

    def apply(self, replace: list[str] | None = None) -> RunResult: ...


# Terraform on a module directory, reporting its events to a sink (provision.terraform has it).
TerraformFactory = Callable[[Path, EventSink], TerraformRunner]
# Delete the cluster's VMs in a zone but those named (the VMs Terraform's state holds there).
Sweep = Callable[[str, Collection[str]], Swept]


class ZoneFailover:
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
        sweep: Sweep | None = None,
        wait: float | None = None,
    ) -> None:
        self.spec = spec
        self.workdir = state.terraform_dir
        self.module = module
        self.terraform = terraform
        self.progress = progress
        self.zones = report.zones
        self.reserved = report.reserved
        self.keep = list(keep)
        self.attempts: list[tuple[str, FailoverDecision]] = []
        self.suggested: list[str] = []  # zones the API said have capacity, latest first
        self.changed = False
        self.sweep = sweep
        self.swept: set[str] = set()
        self.wait = wait

    def run(self, home: str | None, replace: list[str]) -> tuple[RunResult, bool]:
        """Apply from `home` (the cluster's zone) or the first usable zone; returns the
        successful apply's result and whether anything changed."""
        zone: str | None = home or self.zones[0]
        while zone is not None:
            self._free_other_zones(zone)
            self._write(zone, None)
            try:
                result = self.terraform.apply(replace=replace)
            except KeyboardInterrupt:
                self._interrupted(zone)
                raise
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

    def tried(self) -> list[str]:
        """The zones tried so far, each once, in the order they were tried."""
        return list(dict.fromkeys(zone for zone, _ in self.attempts))

    def gave_up(self, zone: str, reason: str, *, capacity: bool) -> str | None:
        """`zone` took the apply but not the cluster (a flex-start gang's request found no
        VMs): it counts as tried, as a failed apply does, so that no zone is tried twice.
        Returns the next zone to try where `capacity` was what it lacked, else None."""
        kind = FailoverKind.CAPACITY if capacity else FailoverKind.FATAL
        decision = FailoverDecision(kind, reason)
        self.attempts.append((zone, decision))
        return next_zone(
            self.zones, self.tried(), decision, keep_zone=bool(self.keep), suggested=self.suggested
        )

    def _next(self, zone: str, decision: FailoverDecision, cause: ProvisionError) -> str:
        tried = self.tried()
        self.suggested = [*decision.zones_hint, *self.suggested]
        listed = gcp_config(self.spec).zones  # preflight already said why it dropped any
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
        self._sweep(zone)
        if not decision.try_next_zone:
            raise failure_error(zone, decision) from cause
        if self.keep:
            raise ProvisionError(
                f"adding nodes in {zone} failed: {decision.reason}",
                hint=f"the cluster's nodes are in {zone}, and moving them would recreate them "
                "all; run `dlvm up` again later, or set nodes.min_count to accept fewer nodes",
            ) from cause
        raise exhausted_error(self.attempts) from cause

    def _interrupted(self, zone: str) -> None:
        """Ctrl-C during an apply (a flex-start VM may be waiting for capacity): Terraform has
        stopped; the nodes this `up` made, those waiting included, are deleted, so nothing is
        left half made and Terraform's state stays what `down` expects. A second Ctrl-C
        leaves at once."""
        self.progress.note(f"interrupted: deleting the nodes this attempt made in {zone}")
        self._release(zone, "interrupted")
        self.swept.discard(zone)
        self._sweep(zone)

    def _accept_partial(self, zone: str, decision: FailoverDecision) -> RunResult | None:
        """With nodes.min_count, keep node-0..node-(k-1) when the zone made enough of them."""
        if gcp_nodes(self.spec).min_count is None or decision.kind is FailoverKind.FATAL:
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
            f"{gcp_nodes(self.spec).min_count}); `dlvm up` later adds the rest"
        )
        self._write(zone, prefix)
        return self.terraform.apply()

    def _free_other_zones(self, zone: str) -> None:
        """Delete nodes a failed attempt left in another zone before trying `zone`: those
        Terraform's state holds, then any other VM of the cluster in the zones left."""
        made = _nodes_in_state(self.workdir)
        if made is None or any(where != zone for where in made.values()):
            self._release(zone, f"before trying {zone}")
        for left in dict.fromkeys(tried for tried, _ in self.attempts):
            if left != zone:
                self._sweep(left)

    def _sweep(self, zone: str) -> None:
        """Delete the cluster's VMs in `zone` that Terraform's state does not hold (a Spot VM
        preempted while being created may stay there, stopped); once per zone."""
        made = _nodes_in_state(self.workdir)
        if self.sweep is None or zone in self.swept or made is None:
            return
        self.swept.add(zone)
        held = {instance_name(self.spec.name, name) for name, at in made.items() if at == zone}
        for line in self.sweep(zone, held).notes(zone):
            self.progress.note(line)

    def _release(self, zone: str, why: str) -> None:
        """Shrink the node set to the nodes the cluster had before this `up` (none for a new
        cluster). Skipped when the state shows nothing to remove."""
        made = _nodes_in_state(self.workdir)
        if made is None:  # unreadable state: shrink all the same, Terraform knows what is there
            keep, what = list(self.keep), "the nodes of the failed attempt"
        else:
            keep = [name for name in self.keep if name in made]
            extra = sorted(set(made) - set(keep), key=rank_order)
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
            wait=self.wait,
            login=Login(
                os_login=bool(self.module.tfvars.get("os_login")),
                user=str(self.module.tfvars.get("ssh_user", "")),
            ),
            reserved=self.reserved.get(zone),
            image=str(self.module.tfvars.get("image") or "") or None,
        )
        dataclasses.replace(self.module, tfvars=tfvars).write(self.workdir)


def rank_order(name: str) -> tuple[int, str]:
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
