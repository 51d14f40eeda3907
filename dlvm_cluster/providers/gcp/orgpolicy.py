"""The organization policies that decide whether a cluster can be made at all, read before
anything is: the effective policy of each constraint on the project (Organization Policy API
v2, `getEffectivePolicy`, which merges the organization's, folders' and project's own).

What each one means for dlvm:
- compute.vmExternalIpAccess: external IPs forbidden -> `public_ip: false` (IAP) is needed;
- compute.requireOsLogin: enforced -> OS Login is turned on (or refused if the spec turns it off);
- compute.trustedImageProjects: the image's project must be trusted;
- gcp.resourceLocations: the region must be allowed;
- iam.disableServiceAccountCreation: enforced -> name an existing account.
A policy dlvm cannot read (no orgpolicy.policies.get) is a warning: nothing is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp import identity
from dlvm_cluster.providers.gcp.plan import GcpPlan
from dlvm_cluster.providers.gcp.rest import ORG_POLICY, GoogleRest

EXTERNAL_IP = "compute.vmExternalIpAccess"
OS_LOGIN = "compute.requireOsLogin"
TRUSTED_IMAGES = "compute.trustedImageProjects"
LOCATIONS = "gcp.resourceLocations"
NO_ACCOUNT_CREATION = "iam.disableServiceAccountCreation"


@dataclass
class OrgPolicies:
    """What the project's effective policies require of the cluster."""

    os_login_required: bool = False
    warnings: list[str] = field(default_factory=list)


def effective_policy(rest: GoogleRest, project: str, constraint: str) -> dict[str, Any] | None:
    """The effective policy's spec ({} when no policy is set), None when it cannot be read."""
    status, data, _ = rest.call(
        "GET", ORG_POLICY, f"/v2/projects/{project}/policies/{constraint}:getEffectivePolicy"
    )
    if status == 404:  # no policy anywhere in the hierarchy: the constraint's default
        return {}
    if status != 200:
        return None
    spec = data.get("spec")
    return spec if isinstance(spec, dict) else {}


def _rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    rules = policy.get("rules")
    return [rule for rule in rules if isinstance(rule, dict)] if isinstance(rules, list) else []


def enforced(policy: dict[str, Any]) -> bool:
    """A boolean constraint's effective value (its rules carry no conditions once merged)."""
    return any(rule.get("enforce") is True for rule in _rules(policy))


def allows(policy: dict[str, Any], value: str) -> bool | None:
    """Whether a list constraint allows `value`: True, False, or None where the policy names
    value groups (in:...) dlvm cannot expand offline."""
    undecided = False
    allowed_somewhere = False
    restricted = False
    for rule in _rules(policy):
        if rule.get("allowAll") is True:
            return True
        if rule.get("denyAll") is True:
            return False
        values = rule.get("values")
        if not isinstance(values, dict):
            continue
        denied = [_bare(v) for v in values.get("deniedValues") or [] if isinstance(v, str)]
        if value in denied:
            return False
        allowed = [v for v in values.get("allowedValues") or [] if isinstance(v, str)]
        if allowed:
            restricted = True
            allowed_somewhere |= value in {_bare(v) for v in allowed}
            undecided |= any(v.startswith(("in:", "under:")) for v in allowed)
    if not restricted or allowed_somewhere:
        return True
    return None if undecided else False


def _bare(value: str) -> str:
    return value.removeprefix("is:")


def read_policies(rest: GoogleRest, plan: GcpPlan, image_project: str) -> OrgPolicies:
    """Raise a ProvisionError for a policy the spec breaks; say what is required."""
    spec, provider = plan.spec, plan.config
    found = OrgPolicies()
    unreadable: list[str] = []

    def read(constraint: str) -> dict[str, Any] | None:
        policy = effective_policy(rest, provider.project, constraint)
        if policy is None:
            unreadable.append(constraint)
        return policy

    external = read(EXTERNAL_IP)
    # The policy lists the instances that may have an external IP (by path); the cluster's
    # head must be one of them.
    head = f"projects/{provider.project}/zones/{provider.zones[0]}/instances/{spec.name}-node-0"
    if external is not None and provider.public_ip and allows(external, head) is not True:
        raise ProvisionError(
            f"an organization policy ({EXTERNAL_IP}) forbids external IP addresses on the VMs "
            f"of project {provider.project}",
            hint="set provider.public_ip: false: the nodes get internal addresses only, and "
            "dlvm reaches them through IAP TCP forwarding (gcloud compute start-iap-tunnel)",
        )
    os_login = read(OS_LOGIN)
    if os_login is not None and enforced(os_login):
        if provider.os_login is False:
            raise ProvisionError(
                f"an organization policy ({OS_LOGIN}) requires OS Login on project "
                f"{provider.project}, but provider.os_login is false",
                hint="remove provider.os_login (dlvm turns OS Login on when it is required) or "
                "set it to true",
            )
        found.os_login_required = True
    images = read(TRUSTED_IMAGES)
    if images is not None and allows(images, f"projects/{image_project}") is False:
        raise ProvisionError(
            f"an organization policy ({TRUSTED_IMAGES}) does not trust images of project "
            f"{image_project}",
            hint=f"ask an administrator to add projects/{image_project} to {TRUSTED_IMAGES}, or "
            "set nodes.image to an image of a trusted project",
        )
    locations = read(LOCATIONS)
    if locations is not None:
        verdict = allows(locations, provider.region)
        if verdict is None:
            verdict = allows(locations, provider.zones[0])
        if verdict is False:
            raise ProvisionError(
                f"an organization policy ({LOCATIONS}) does not allow resources in "
                f"{provider.region}",
                hint="choose an allowed region (gcloud resource-manager org-policies describe "
                f"{LOCATIONS} --effective --project {provider.project})",
            )
        if verdict is None:
            found.warnings.append(
                f"an organization policy ({LOCATIONS}) limits locations to value groups dlvm "
                f"cannot expand: if {provider.region} is not in them, the apply fails"
            )
    if identity.creates_service_account(provider):
        accounts = read(NO_ACCOUNT_CREATION)
        if accounts is not None and enforced(accounts):
            raise ProvisionError(
                f"an organization policy ({NO_ACCOUNT_CREATION}) forbids making service "
                "accounts, and dlvm makes one for the cluster by default",
                hint="name an existing account under provider.service_account (it needs object "
                "access on the cluster's buckets), or `none` for nodes without one",
            )
    if unreadable:
        found.warnings.append(
            "cannot read the organization policies "
            f"{', '.join(unreadable)} (orgpolicy.policies.get, in roles/orgpolicy.policyViewer): "
            "a policy that forbids what the cluster needs makes the apply fail"
        )
    return found
