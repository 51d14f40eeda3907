"""Preflight of the spec's Cloud Storage buckets and of the identity the nodes mount them
as, before any VM is made, so a mistyped name or a missing grant fails in seconds instead of
at the first checkpoint.

The nodes' identity decides, not the user's:
- the cluster's own account (the default): the module grants it object access on each
  bucket, so the user must be able to set the bucket's IAM policy (testPermissions);
- an existing account (`service_account: EMAIL`): the user must be able to act as it
  (iam.serviceAccounts.actAs, needed to make VMs that run as it), and the bucket's policy
  should grant it the role its mounts need (a grant on the project would not show there, so
  a missing one is a warning).
Either way the bucket must exist: objects.list of one object under the mount's PREFIX as
the user tells a missing bucket from a forbidden one.
"""

from __future__ import annotations

from collections.abc import Iterable

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp import identity
from dlvm_cluster.providers.gcp.config import GcpConfig
from dlvm_cluster.providers.gcp.plan import GcpPlan
from dlvm_cluster.providers.gcp.rest import IAM, STORAGE, GoogleRest
from dlvm_cluster.spec.model import StorageMount

READ_WRITE_ROLE = identity.READ_WRITE_ROLE
READ_ONLY_ROLE = identity.READ_ONLY_ROLE
SET_POLICY = "storage.buckets.setIamPolicy"
ACT_AS = "iam.serviceAccounts.actAs"
# Roles on a bucket that let gcsfuse read (and, for the first two and the admins, write).
WRITING_ROLES = frozenset({READ_WRITE_ROLE, "roles/storage.objectAdmin", "roles/storage.admin"})
READING_ROLES = WRITING_ROLES | {READ_ONLY_ROLE}
RETRY_HINT = "run the same command again; if it persists, check the Google Cloud status page"


def _grant_command(bucket: str, account: str, role: str) -> str:
    return (
        f"gcloud storage buckets add-iam-policy-binding gs://{bucket} "
        f"--member=serviceAccount:{account} --role={role}"
    )


def check_node_identity(rest: GoogleRest, plan: GcpPlan) -> list[str]:
    """An existing account must exist and the user must be able to act as it; returns a
    warning when the IAM API cannot tell (not enabled, or refused)."""
    provider = plan.config
    account = provider.service_account
    if identity.creates_service_account(provider) or not account or account == "none":
        return []
    status, data, message = rest.call(
        "POST",
        IAM,
        f"/v1/projects/-/serviceAccounts/{account}:testIamPermissions",
        body={"permissions": [ACT_AS]},
    )
    if status == 404:
        raise ProvisionError(
            f"the service account {account} (provider.service_account) does not exist: {message}",
            hint="fix the email, or remove provider.service_account to let dlvm make an "
            "account for the cluster",
        )
    if status == 200 and ACT_AS not in data.get("permissions", []):
        raise ProvisionError(
            f"your account cannot make VMs that run as {account}: it lacks {ACT_AS}",
            hint=f"ask for roles/iam.serviceAccountUser on {account} (gcloud iam "
            f"service-accounts add-iam-policy-binding {account} --member=user:YOU "
            "--role=roles/iam.serviceAccountUser)",
        )
    if status != 200:
        return [
            f"cannot check that you may act as {account} (HTTP {status} {message}; the IAM API "
            "answers this): without iam.serviceAccounts.actAs the apply fails"
        ]
    return []


def check_buckets(rest: GoogleRest, plan: GcpPlan) -> list[str]:
    """Raise a ProvisionError for the first bucket that does not exist, that the nodes could
    not be given, or that the user cannot list; return warnings."""
    spec, provider = plan.spec, plan.config
    warnings: list[str] = []
    grants = identity.bucket_grants(spec)
    account = identity.nodes_service_account(plan)
    for entry in _one_per_bucket(spec.storage):
        bucket = entry.bucket_name
        _check_exists(rest, entry, provider)
        if identity.creates_service_account(provider):
            _check_can_grant(rest, bucket, account, grants[bucket])
        else:
            warnings.extend(_policy_warnings(rest, bucket, account, grants[bucket]))
    return warnings


def _one_per_bucket(storage: Iterable[StorageMount]) -> list[StorageMount]:
    seen: dict[str, StorageMount] = {}
    for entry in storage:
        seen.setdefault(entry.bucket_name, entry)
    return list(seen.values())


def _check_exists(rest: GoogleRest, entry: StorageMount, provider: GcpConfig) -> None:
    bucket = entry.bucket_name
    status, _, message = rest.call(
        "GET",
        STORAGE,
        f"/storage/v1/b/{bucket}/o",
        params={"maxResults": "1", "prefix": f"{entry.prefix}/" if entry.prefix else ""},
    )
    if status in (200, 403):  # 403: it exists; whether the nodes may read it is checked next
        return
    if status == 404:
        raise ProvisionError(
            f"storage bucket gs://{bucket} does not exist ({message})",
            hint=f"create it: gcloud storage buckets create gs://{bucket} "
            f"--project {provider.project} --location {provider.region}, or fix the name",
        )
    raise ProvisionError(
        f"the Cloud Storage API failed listing gs://{bucket}: HTTP {status} {message}",
        hint=RETRY_HINT,
    )


def _check_can_grant(rest: GoogleRest, bucket: str, account: str, role: str) -> None:
    status, data, message = rest.call(
        "GET",
        STORAGE,
        f"/storage/v1/b/{bucket}/iam/testPermissions",
        params={"permissions": SET_POLICY},
    )
    if status == 200 and SET_POLICY in data.get("permissions", []):
        return
    if status not in (200, 403):
        raise ProvisionError(
            f"cannot check your permissions on gs://{bucket}: HTTP {status} {message}",
            hint=RETRY_HINT,
        )
    raise ProvisionError(
        f"dlvm grants the cluster's service account {role} on gs://{bucket}, but your account "
        f"cannot change the bucket's IAM policy ({SET_POLICY})",
        hint=f"ask the bucket's owner for roles/storage.admin on gs://{bucket}, or to grant "
        f"{role} to an existing service account and name it under provider.service_account",
    )


def _policy_warnings(rest: GoogleRest, bucket: str, account: str, role: str) -> list[str]:
    """Whether the bucket's own policy grants `account` what its mounts need."""
    status, data, message = rest.call("GET", STORAGE, f"/storage/v1/b/{bucket}/iam")
    if status != 200:
        return [
            f"cannot read the IAM policy of gs://{bucket} ({message or status}): not checked "
            f"that {account} may mount it; without {role} the mount fails on every node"
        ]
    member = f"serviceAccount:{account}"
    enough = WRITING_ROLES if role == READ_WRITE_ROLE else READING_ROLES
    bindings = data.get("bindings")
    held = {
        str(binding.get("role"))
        for binding in (bindings if isinstance(bindings, list) else [])
        if isinstance(binding, dict) and member in (binding.get("members") or [])
    }
    if held & enough:
        return []
    return [
        f"gs://{bucket} grants {account} none of the roles its mounts need ({role}): unless "
        f"the account holds one on the project, the mount fails on every node. Grant it: "
        + _grant_command(bucket, account, role)
    ]
