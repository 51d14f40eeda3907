"""VMs of a cluster that a zone keeps after `up` has left it, outside Terraform's state.

A Spot VM preempted while it is being created fails Terraform's create, yet Compute Engine may
keep the VM, stopped. Terraform's state does not hold it, so shrinking the node set does not
delete it, and it would stay behind (its disk billed) in a zone the cluster no longer uses. When
the zone failover loop leaves a zone, the cluster's VMs there (found by the labels the module
gives every VM: cluster=NAME, created-by=dlvm) that Terraform's state does not hold, and that
were made during this `up`, are deleted through the API. The labels alone do not say which
state dir made a VM: another cluster of the same name (a colleague's, or one of another
DLVM_HOME) in the same project carries them too, and was made before this `up`, so it is
left alone.

Google's client library is imported only inside the functions that call the API.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.failover import classify_operation_error
from dlvm_cluster.providers.gcp.instances import finished

CREATED_BY = "dlvm"
# How far this machine's clock may be ahead of Compute Engine's: a VM made this long before the
# `up` began still counts as made by it.
CLOCK_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True)
class Swept:
    """What a sweep of one zone did: the VMs deleted, those it could not delete (why), and
    those with the cluster's labels made before the `up` began (not this state dir's)."""

    deleted: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    older: tuple[str, ...] = ()
    unlisted: str = ""  # why the zone's VMs could not be listed ("" when they were)
    cluster: str = ""

    def notes(self, zone: str) -> list[str]:
        """What the progress display says of it: each VM deleted, and how to delete the rest
        (or to find them, when the zone could not be listed)."""
        if self.unlisted:
            return [
                f"could not list the VMs of cluster {self.cluster} in {zone}: {self.unlisted}; "
                f"look for VMs left there with gcloud compute instances list --zones {zone} "
                f"--filter=labels.cluster={self.cluster}"
            ]
        return [
            *(
                f"deleted {name} ({zone}): a VM of this cluster outside Terraform's state (a "
                "Spot VM preempted while it was created stays behind, stopped)"
                for name in self.deleted
            ),
            *(
                f"could not delete {name} left in {zone}: {why}; delete it in the console or "
                f"with gcloud compute instances delete {name} --zone {zone}"
                for name, why in self.failed.items()
            ),
            *(
                f"left {name} ({zone}) alone: it carries this cluster's labels but was made "
                "before this `dlvm up` (another cluster of the same name?)"
                for name in self.older
            ),
        ]


def label_filter(cluster: str) -> str:
    """The instances.list filter that selects the cluster's VMs by their `cluster` label (the
    `created-by` label, whose key has a hyphen, is checked on each VM listed instead)."""
    return f'(labels.cluster = "{cluster}")'


def sweep_zone(
    clients: ComputeClients,
    project: str,
    cluster: str,
    zone: str,
    held: Collection[str],
    since: datetime,
) -> Swept:
    """Delete the cluster's VMs in `zone` made at or after `since` (when this `up` began, an
    aware datetime) except those Terraform's state holds (`held`, VM names), waiting for each
    deletion. A VM deleted meanwhile counts as deleted; a failed listing or deletion is
    reported, not raised: the cluster itself is not at stake."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    request = compute_v1.ListInstancesRequest(
        project=project, zone=zone, filter=label_filter(cluster)
    )
    try:
        listed = call_api(
            f"the VMs of cluster {cluster} in {zone}",
            project,
            lambda: list(clients.instances.list(request=request, timeout=REQUEST_TIMEOUT)),
        )
    except (ProvisionError, exceptions.NotFound) as exc:
        return Swept(unlisted=_reason(exc), cluster=cluster)
    deleted: list[str] = []
    failed: dict[str, str] = {}
    older: list[str] = []
    for vm in listed:
        name = str(vm.name)
        labels = dict(vm.labels)
        if name in held or (labels.get("cluster"), labels.get("created-by")) != (
            cluster,
            CREATED_BY,
        ):
            continue
        if not _made_since(str(vm.creation_timestamp), since):
            older.append(name)
            continue
        try:
            _delete(clients, project, zone, name)
        except exceptions.NotFound:
            pass  # gone already
        except ProvisionError as exc:
            failed[name] = _reason(exc)
            continue
        deleted.append(name)
    return Swept(tuple(deleted), failed, tuple(older), cluster=cluster)


def _made_since(created: str, since: datetime) -> bool:
    """Whether a VM's creationTimestamp (RFC 3339) is at or after `since`, allowing for
    CLOCK_MARGIN; a VM whose time cannot be read is not taken for one this `up` made."""
    try:
        made = datetime.fromisoformat(created)
    except ValueError:
        return False
    if made.tzinfo is None:
        return False
    return made >= since - CLOCK_MARGIN


def _delete(clients: ComputeClients, project: str, zone: str, name: str) -> None:
    operation = call_api(
        f"the deletion of {name}",
        project,
        lambda: clients.instances.delete_unary(
            project=project, zone=zone, instance=name, timeout=REQUEST_TIMEOUT
        ),
    )
    done = finished(clients, project, zone, operation, f"the deletion of {name}")
    decision = classify_operation_error(done)
    if decision is not None:
        raise ProvisionError(decision.reason)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ProvisionError) else str(exc).splitlines()[0]
