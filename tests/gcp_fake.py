"""A fake Compute Engine REST API on 127.0.0.1 (and the Cloud Storage JSON API's objects.list,
for the storage check), answering JSON of the documented shapes.

No emulator of Compute Engine exists, so this is the one fake the tests allow (docs/ARCHITECTURE.md,
"Testing"): the real google-cloud-compute clients talk HTTP to it through
client_options={"api_endpoint": ...} with anonymous credentials, so request building, JSON
parsing and HTTP error mapping are the library's own. Responses follow the REST reference
(camelCase fields, int64 as strings, errors as {"error": {"code", "message", "errors"}}).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from dlvm_cluster.providers.gcp.credentials import ComputeClients, compute_clients
from dlvm_cluster.providers.gcp.tfvars import (
    ACCELERATOR_IMAGE_FAMILIES,
    ACCELERATOR_IMAGE_PROJECT,
    DLVM_IMAGE_PROJECT,
)

API = "https://www.googleapis.com/compute/v1"
# The guestOsFeatures `gcloud compute images describe` shows for Ubuntu 22.04 images, which the
# Deep Learning VM images are built on.
DLVM_GUEST_OS_FEATURES = ("VIRTIO_SCSI_MULTIQUEUE", "SEV_CAPABLE", "UEFI_COMPATIBLE", "GVNIC")
Response = tuple[int, dict[str, Any]]


class FakeCompute:
    """Routes (method, path) to responses; a list of responses is served in turn (last repeats)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.routes: dict[tuple[str, str], list[Response]] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        # Run after a route answers with a body, to change what the fake serves next.
        self.effects: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {}
        # Flex-start VMs still waiting for capacity: instance path -> reads left while PENDING.
        self.pending_reads: dict[str, int] = {}
        # The JSON bodies of POST requests, in order: (path, body).
        self.posted: list[tuple[str, dict[str, Any]]] = []
        # Run with a POST's body before the route answers (a resize request names itself).
        self.on_post: dict[str, Callable[[dict[str, Any]], None]] = {}

    def clients(self) -> ComputeClients:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return compute_clients(credentials, api_endpoint=self.url)

    def calls(self, path_part: str) -> int:
        return sum(1 for _, path, _ in self.requests if path_part in path)

    # -- raw routes ------------------------------------------------------------------------
    def set(self, path: str, body: dict[str, Any], status: int = 200, method: str = "GET") -> None:
        self.routes[(method, "/compute/v1/" + path)] = [(status, body)]

    def sequence(self, path: str, responses: list[Response]) -> None:
        self.routes[("GET", "/compute/v1/" + path)] = list(responses)

    def error(
        self,
        path: str,
        status: int,
        message: str,
        reason: str,
        domain: str = "global",
        method: str = "GET",
    ) -> None:
        self.set(path, error_body(status, message, reason, domain), status, method)

    def respond(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Response:
        if method == "POST":
            self.posted.append((path, body or {}))
            hook = self.on_post.get(path)
            if hook is not None:
                hook(body or {})
        responses = self.routes.get((method, path))
        listing = _INSTANCE_LIST.fullmatch(path)
        if not responses and method == "GET" and listing:
            return self._instance_list(path, (query or {}).get("filter", [""])[0])
        if not responses:
            return 404, error_body(404, f"The resource '{path}' was not found", "notFound")
        if method == "GET" and path in self.pending_reads:
            self._read_pending(path)
        response = responses.pop(0) if len(responses) > 1 else responses[0]
        effect = self.effects.get((method, path))
        if effect is not None:
            effect(response[1])
        return response

    # -- resources of the documented shapes ------------------------------------------------
    def project(self, project: str, quotas: dict[str, tuple[float, float]]) -> None:
        self.set(f"projects/{project}", {"name": project, "quotas": quota_list(quotas)})

    def region(
        self,
        project: str,
        region: str,
        zones: list[str],
        quotas: dict[str, tuple[float, float]],
        status: str = "UP",
    ) -> None:
        self.set(
            f"projects/{project}/regions/{region}",
            {
                "kind": "compute#region",
                "name": region,
                "status": status,
                "zones": [f"{API}/projects/{project}/zones/{zone}" for zone in zones],
                "quotas": quota_list(quotas),
            },
        )
        for zone in zones:
            self.zone(project, zone, region)

    def zone(self, project: str, zone: str, region: str, status: str = "UP") -> None:
        self.set(
            f"projects/{project}/zones/{zone}",
            {
                "kind": "compute#zone",
                "name": zone,
                "status": status,
                "region": f"{API}/projects/{project}/regions/{region}",
            },
        )

    def roce_profile(self, project: str, zone: str) -> None:
        """The zone's RoCE network profile (networkProfiles.get), as A3 Ultra and A4 need."""
        name = f"{zone}-vpc-roce"
        self.set(
            f"projects/{project}/global/networkProfiles/{name}",
            {
                "kind": "compute#networkProfile",
                "id": "7316590384715620000",
                "name": name,
                "selfLink": f"{API}/projects/{project}/global/networkProfiles/{name}",
                "zone": f"{API}/projects/{project}/zones/{zone}",
                "location": {"name": zone, "scope": "ZONE"},
                "features": {
                    "interfaceTypes": ["MRDMA"],
                    "allowAutoModeSubnet": "AUTO_MODE_SUBNET_BLOCKED",
                    "allowFirewallPolicy": "FIREWALL_POLICY_BLOCKED",
                    "unicast": "UNICAST_SDN",
                },
            },
        )

    def accelerators(self, project: str, zone: str, offered: dict[str, int]) -> None:
        self.set(
            f"projects/{project}/zones/{zone}/acceleratorTypes",
            {
                "kind": "compute#acceleratorTypeList",
                "items": [
                    {
                        "kind": "compute#acceleratorType",
                        "name": name,
                        "description": name,
                        "zone": f"{API}/projects/{project}/zones/{zone}",
                        "maximumCardsPerInstance": maximum,
                    }
                    for name, maximum in offered.items()
                ],
            },
        )

    def machine_type(
        self, project: str, zone: str, name: str, gpus: tuple[str, int] | None = None
    ) -> None:
        body: dict[str, Any] = {
            "kind": "compute#machineType",
            "name": name,
            "zone": zone,
            "guestCpus": 12,
            "memoryMb": 87040,
        }
        if gpus:
            body["accelerators"] = [
                {"guestAcceleratorType": gpus[0], "guestAcceleratorCount": gpus[1]}
            ]
        self.set(f"projects/{project}/zones/{zone}/machineTypes/{name}", body)

    def image_family(
        self, project: str, family: str, name: str, disk_gb: int, deprecated: str | None = None
    ) -> None:
        body: dict[str, Any] = {
            "kind": "compute#image",
            "name": name,
            "family": family,
            "diskSizeGb": str(disk_gb),
            "status": "READY",
            "selfLink": f"{API}/projects/{project}/global/images/{name}",
        }
        if deprecated:
            body["deprecated"] = {"state": deprecated}
        self.set(f"projects/{project}/global/images/family/{family}", body)

    def dlvm_image_family(
        self,
        family: str,
        name: str,
        disk_gb: int,
        *,
        features: tuple[str, ...] = DLVM_GUEST_OS_FEATURES,
        deprecated: str | None = None,
        replacement: str | None = None,
        architecture: str = "X86_64",
        project: str = DLVM_IMAGE_PROJECT,
    ) -> None:
        """images.getFromFamily of a Deep Learning VM family, with the guestOsFeatures and
        architecture (X86_64 or ARM64) real images carry and, when given, a deprecation status
        naming its successor (DeprecationStatus.replacement is the successor's URL)."""
        self.image_family(project, family, name, disk_gb)
        body = self.routes[
            ("GET", f"/compute/v1/projects/{project}/global/images/family/{family}")
        ][0][1]
        body["architecture"] = architecture
        body["guestOsFeatures"] = [{"type": feature} for feature in features]
        if deprecated:
            body["deprecated"] = {
                "state": deprecated,
                "deprecated": "2026-04-13T00:00:00.000-07:00",
            }
            if replacement:
                body["deprecated"]["replacement"] = (
                    f"{API}/projects/{project}/global/images/{replacement}"
                )

    def accelerator_image_families(self) -> None:
        """images.getFromFamily of Google's accelerator families, the default image of the
        RDMA shapes (the arm64 one for A4X)."""
        for family in sorted(set(ACCELERATOR_IMAGE_FAMILIES.values())):
            self.dlvm_image_family(
                family,
                f"{family}-v20260522",
                100,
                project=ACCELERATOR_IMAGE_PROJECT,
                architecture="ARM64" if "-arm64-" in family else "X86_64",
            )

    def reservation(
        self,
        project: str,
        zone: str,
        name: str,
        machine_type: str,
        count: int,
        in_use: int = 0,
        *,
        status: str = "READY",
        shared_with: tuple[str, ...] = (),
        template: str = "",
        deployment_type: str = "",
        placement_policy: str = "",
    ) -> None:
        """reservations.get of a specific (single-project or shared) reservation: the VM
        properties it holds capacity for (or, made from an instance `template`, that
        template's link and no properties) and how many of its VMs are in use; a DENSE
        `deployment_type` and a compact `placement_policy` (name, in the zone's region) as
        Google reports them for future and calendar-mode reservations."""
        body: dict[str, Any] = {
            "kind": "compute#reservation",
            "id": "4100668622331754141",
            "name": name,
            "zone": f"{API}/projects/{project}/zones/{zone}",
            "selfLink": f"{API}/projects/{project}/zones/{zone}/reservations/{name}",
            "status": status,
            "specificReservationRequired": True,
            "specificReservation": {
                "instanceProperties": {"machineType": machine_type},
                "count": str(count),
                "inUseCount": str(in_use),
                "assuredCount": str(count),
            },
            "shareSettings": {"shareType": "LOCAL"},
        }
        if deployment_type:
            body["deploymentType"] = deployment_type
        if placement_policy:
            region = zone.rsplit("-", 1)[0]
            body["resourcePolicies"] = {
                "policy": f"{API}/projects/{project}/regions/{region}/resourcePolicies/"
                f"{placement_policy}"
            }
        if template:
            specific = body["specificReservation"]
            del specific["instanceProperties"]
            specific["sourceInstanceTemplate"] = (
                f"{API}/projects/{project}/global/instanceTemplates/{template}"
            )
        if shared_with:
            body["shareSettings"] = {
                "shareType": "SPECIFIC_PROJECTS",
                "projectMap": {other: {"projectId": other} for other in shared_with},
            }
        self.set(f"projects/{project}/zones/{zone}/reservations/{name}", body)

    def project_metadata(self, project: str, items: dict[str, str]) -> None:
        """Project-wide metadata (commonInstanceMetadata) on a project set with `project`."""
        body = self.routes[("GET", f"/compute/v1/projects/{project}")][0][1]
        body["commonInstanceMetadata"] = {
            "kind": "compute#metadata",
            "fingerprint": "qN5ogJjzfUc=",
            "items": [{"key": key, "value": value} for key, value in items.items()],
        }

    def instance(
        self,
        project: str,
        zone: str,
        name: str,
        status: str,
        *,
        spot: bool = False,
        last_start: str = "2026-03-01T10:00:00.000-08:00",
        instance_id: str = "4112109563542811000",
        labels: dict[str, str] | None = None,
        created: str | None = None,
    ) -> None:
        """A VM as instances.get shows it; `created` (RFC 3339, default now) is its
        creationTimestamp."""
        scheduling: dict[str, Any] = {"onHostMaintenance": "TERMINATE"}
        if spot:
            scheduling.update(
                provisioningModel="SPOT", preemptible=True, instanceTerminationAction="STOP"
            )
        self.set(
            f"projects/{project}/zones/{zone}/instances/{name}",
            {
                "kind": "compute#instance",
                "id": instance_id,
                "creationTimestamp": created
                or datetime.now(UTC).isoformat(timespec="milliseconds"),
                "name": name,
                "status": status,
                "zone": f"{API}/projects/{project}/zones/{zone}",
                "lastStartTimestamp": last_start,
                "scheduling": scheduling,
                "networkInterfaces": [
                    {"networkIP": "10.64.0.2", "accessConfigs": [{"natIP": "203.0.113.10"}]}
                ],
                **({"labels": labels} if labels else {}),
            },
        )

    def instance_operation(
        self,
        project: str,
        zone: str,
        name: str,
        verb: str,
        *,
        error: dict[str, Any] | None = None,
        waits: int = 1,
    ) -> None:
        """instances.start, instances.resume, instances.stop or instances.delete (`verb`): the
        request (POST .../start, .../resume, .../stop, DELETE on the instance) answers with a
        zone operation still RUNNING, and zoneOperations.wait answers RUNNING `waits - 1` times,
        then DONE (with `error`, an operation's error object, if given). A DONE operation
        without error leaves the VM RUNNING (TERMINATED for a stop) with the same id, or, for a
        delete, gone."""
        operation_name = f"operation-1764686400000-{verb}-{name}"
        zone_link = f"{API}/projects/{project}/zones/{zone}"
        pending = {
            "kind": "compute#operation",
            "id": "2305312097416370000",
            "name": operation_name,
            "operationType": verb,
            "targetLink": f"{zone_link}/instances/{name}",
            "targetId": "4112109563542811000",
            "zone": zone_link,
            "status": "RUNNING",
            "progress": 0,
            "insertTime": "2026-03-02T09:00:00.000-08:00",
            "startTime": "2026-03-02T09:00:00.100-08:00",
        }
        done: dict[str, Any] = {
            **pending,
            "status": "DONE",
            "progress": 100,
            "endTime": "2026-03-02T09:00:20.000-08:00",
        }
        if error is not None:
            done.update(
                error=error, httpErrorStatusCode=503, httpErrorMessage="SERVICE UNAVAILABLE"
            )
        instance_path = f"projects/{project}/zones/{zone}/instances/{name}"
        if verb == "delete":
            self.set(instance_path, pending, method="DELETE")
        else:
            self.set(f"{instance_path}/{verb}", pending, method="POST")
        wait = (
            "POST",
            f"/compute/v1/projects/{project}/zones/{zone}/operations/{operation_name}/wait",
        )
        self.routes[wait] = [(200, pending)] * (waits - 1) + [(200, done)]
        instance = ("GET", f"/compute/v1/{instance_path}")

        def finished(body: dict[str, Any]) -> None:
            if body.get("status") != "DONE" or "error" in body or instance not in self.routes:
                return
            if verb == "delete":
                del self.routes[instance]
                self.routes.pop(("DELETE", instance[1]), None)
                return
            status, vm = self.routes[instance][-1]
            after = "TERMINATED" if verb == "stop" else "RUNNING"
            self.routes[instance] = [(status, {**vm, "status": after})]

        self.effects[wait] = finished

    def flex_start_instance(
        self,
        project: str,
        zone: str,
        name: str,
        *,
        pending_reads: int,
        labels: dict[str, str],
        max_run_seconds: int = 8 * 3600,
    ) -> None:
        """A flex-start VM as instances.insert leaves it while Dynamic Workload Scheduler looks
        for capacity: status PENDING, scheduling with provisioningModel FLEX_START, its
        maxRunDuration and termination action. It is PENDING for `pending_reads` reads (get
        or list), then RUNNING: the capacity came."""
        self.instance(project, zone, name, "PENDING", labels=labels)
        path = f"/compute/v1/projects/{project}/zones/{zone}/instances/{name}"
        body = self.routes[("GET", path)][0][1]
        body["scheduling"] = {
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": False,
            "provisioningModel": "FLEX_START",
            "instanceTerminationAction": "DELETE",
            "maxRunDuration": {"seconds": str(max_run_seconds)},
        }
        body.pop("lastStartTimestamp", None)
        self.pending_reads[path] = pending_reads

    def _read_pending(self, path: str) -> None:
        """One read of a PENDING flex-start VM: after the last of its pending reads it runs."""
        self.pending_reads[path] -= 1
        if self.pending_reads[path] < 0:
            del self.pending_reads[path]
            status, body = self.routes[("GET", path)][-1]
            self.routes[("GET", path)] = [(status, {**body, "status": "RUNNING"})]

    def _instance_list(self, path: str, filter_text: str) -> Response:
        """instances.list of a zone: every VM the fake serves there that matches `filter`,
        which is read as Compute Engine's list filter: parenthesized `FIELD = "VALUE"`
        expressions (a label as labels.KEY) joined by AND."""
        terms = _FILTER_TERM.findall(filter_text)
        if filter_text.strip() and (
            not terms or _FILTER_TERM.sub("", filter_text).replace("AND", "").strip()
        ):
            message = f"Invalid value for field 'filter': '{filter_text}'. Invalid list filter."
            return 400, error_body(400, message, "invalid")
        items = []
        for method, route in list(self.routes):
            name = route.removeprefix(path + "/")
            if method != "GET" or not route.startswith(path + "/") or "/" in name:
                continue
            if route in self.pending_reads:
                self._read_pending(route)
            status, body = self.routes[(method, route)][-1]
            if status == 200 and all(_matches(body, key, value) for key, value in terms):
                items.append(body)
        self_link = API + path.removeprefix("/compute/v1")
        return 200, {
            "kind": "compute#instanceList",
            "id": path.removeprefix("/compute/v1/"),
            "items": items,
            "selfLink": self_link,
        }

    # -- Cloud Storage JSON API (objects.list), on the same loopback server ------------------
    def gang(
        self,
        project: str,
        zone: str,
        group: str,
        states: Sequence[str],
        members: Sequence[str] = (),
        failure: tuple[str, str] = ("ZONE_RESOURCE_POOL_EXHAUSTED", "no capacity"),
    ) -> None:
        """A flex-start gang's managed instance group: listManagedInstances answers its
        `members`; a resize request inserted into it then reads as each of `states` in turn
        (the last repeats) and, once SUCCEEDED, the VMs it names are members, RUNNING; FAILED
        carries the error `failure` (code, message). Its cancel and delete answer an
        operation."""
        base = f"projects/{project}/zones/{zone}/instanceGroupManagers/{group}"
        held = list(members)

        def listing() -> None:
            self.set(
                f"{base}/listManagedInstances",
                {
                    "managedInstances": [
                        {
                            "instance": f"{API}/projects/{project}/zones/{zone}/instances/{name}",
                            "name": name,
                            "instanceStatus": "RUNNING",
                            "currentAction": "NONE",
                        }
                        for name in held
                    ]
                },
                method="POST",
            )

        def inserted(body: dict[str, Any]) -> None:
            name = body["name"]
            named = [item["name"] for item in body.get("instances", [])]
            path = f"{base}/resizeRequests/{name}"

            def request(state: str) -> dict[str, Any]:
                answer: dict[str, Any] = {
                    "kind": "compute#instanceGroupManagerResizeRequest",
                    "name": name,
                    "state": state,
                    "requestedRunDuration": body.get("requestedRunDuration", {}),
                    "zone": f"{API}/projects/{project}/zones/{zone}",
                }
                if state == "FAILED":
                    answer["status"] = {
                        "error": {"errors": [{"code": failure[0], "message": failure[1]}]}
                    }
                return answer

            self.sequence(path, [(200, request(state)) for state in states])

            def fulfilled(answer: dict[str, Any]) -> None:
                if answer.get("state") != "SUCCEEDED":
                    return
                for vm in named:
                    if vm not in held:
                        held.append(vm)
                        self.instance(project, zone, vm, "RUNNING")
                listing()

            self.effects[("GET", "/compute/v1/" + path)] = fulfilled
            for verb in ("cancel",):
                self.set(f"{path}/{verb}", _operation(project, zone), method="POST")
            self.set(path, _operation(project, zone), method="DELETE")

        listing()
        self.set(f"{base}/resizeRequests", _operation(project, zone), method="POST")
        self.on_post["/compute/v1/" + f"{base}/resizeRequests"] = inserted

        def deleted(body: dict[str, Any]) -> None:
            for url in body.get("instances", []):
                name = url.rsplit("/", 1)[-1]
                if name in held:
                    held.remove(name)
            listing()

        self.set(f"{base}/deleteInstances", _operation(project, zone), method="POST")
        self.on_post["/compute/v1/" + f"{base}/deleteInstances"] = deleted

    def bucket(self, bucket: str, objects: Sequence[str] = (), *, status: int = 200) -> None:
        """objects.list of `bucket`: its objects (200), or the API's 403 or 404 error."""
        path = f"/storage/v1/b/{bucket}/o"
        if status == 404:
            body = error_body(404, "The specified bucket does not exist.", "notFound")
        elif status == 403:
            body = error_body(
                403,
                "someone@example.com does not have storage.objects.list access to the Google "
                "Cloud Storage bucket. Permission 'storage.objects.list' denied on resource "
                "(or it may not exist).",
                "forbidden",
            )
        else:
            body = {
                "kind": "storage#objects",
                **(
                    {"items": [_storage_object(bucket, name) for name in objects]}
                    if objects
                    else {}
                ),
            }
        self.routes[("GET", path)] = [(status, body)]
        self.bucket_iam(bucket)

    def bucket_iam(
        self,
        bucket: str,
        *,
        can_grant: bool = True,
        bindings: dict[str, list[str]] | None = None,
        policy_status: int = 200,
    ) -> None:
        """The bucket's IAM: testPermissions for the caller (setIamPolicy or nothing), and
        getIamPolicy with `bindings` (role -> members), or the API's 403."""
        granted = ["storage.buckets.setIamPolicy"] if can_grant else []
        self.routes[("GET", f"/storage/v1/b/{bucket}/iam/testPermissions")] = [
            (200, {"kind": "storage#testIamPermissionsResponse", "permissions": granted})
        ]
        policy: dict[str, Any] = {
            "kind": "storage#policy",
            "resourceId": f"projects/_/buckets/{bucket}",
            "version": 1,
            "etag": "CAE=",
            "bindings": [
                {"role": role, "members": members} for role, members in (bindings or {}).items()
            ],
        }
        if policy_status != 200:
            policy = error_body(
                policy_status, "caller does not have storage.buckets.getIamPolicy", "forbidden"
            )
        self.routes[("GET", f"/storage/v1/b/{bucket}/iam")] = [(policy_status, policy)]

    # -- IAM, Organization Policy, OS Login (REST, same loopback server) ----------------------
    def service_account(self, email: str, *, act_as: bool = True) -> None:
        """serviceAccounts.testIamPermissions of an existing account for the caller."""
        path = f"/v1/projects/-/serviceAccounts/{email}:testIamPermissions"
        self.routes[("POST", path)] = [
            (200, {"permissions": ["iam.serviceAccounts.actAs"]} if act_as else {})
        ]

    def org_policy(self, project: str, constraint: str, spec: dict[str, Any] | None) -> None:
        """getEffectivePolicy of `constraint`: a policy whose spec is `spec`, or (None) the
        403 of a caller without orgpolicy.policies.get."""
        path = f"/v2/projects/{project}/policies/{constraint}:getEffectivePolicy"
        if spec is None:
            body = error_body(403, "Permission 'orgpolicy.policies.get' denied", "forbidden")
            self.routes[("GET", path)] = [(403, body)]
            return
        name = f"projects/{project}/policies/{constraint}"
        self.routes[("GET", path)] = [(200, {"name": name, "spec": spec})]

    def os_login(
        self, email: str, username: str, key: str, fingerprint: str = "f1ngerpr1nt"
    ) -> None:
        """tokeninfo naming `email`, importSshPublicKey answering with a login profile whose
        primary POSIX account is `username` and which holds `key`, and the key's delete."""
        self.routes[("GET", "/tokeninfo")] = [
            (200, {"email": email, "email_verified": "true", "scope": "openid"})
        ]
        path = f"/v1/users/{email}:importSshPublicKey"
        self.routes[("POST", path)] = [
            (
                200,
                {
                    "loginProfile": {
                        "name": email,
                        "posixAccounts": [
                            {
                                "primary": True,
                                "username": username,
                                "uid": "1001",
                                "gid": "1001",
                                "homeDirectory": f"/home/{username}",
                                "operatingSystemType": "LINUX",
                                "accountId": "p",
                            }
                        ],
                        "sshPublicKeys": {fingerprint: {"key": key, "fingerprint": fingerprint}},
                    }
                },
            )
        ]
        self.routes[("DELETE", f"/v1/users/{email}/sshPublicKeys/{fingerprint}")] = [(200, {})]

    def preemptions(self, project: str, zone: str, events: list[tuple[str, str]]) -> None:
        """zoneOperations.list answering with compute.instances.preempted operations."""
        self.set(
            f"projects/{project}/zones/{zone}/operations",
            {
                "kind": "compute#operationList",
                "items": [
                    {
                        "kind": "compute#operation",
                        "name": f"systemevent-{index}",
                        "operationType": "compute.instances.preempted",
                        "targetLink": f"{API}/projects/{project}/zones/{zone}/instances/{name}",
                        "insertTime": when,
                        "status": "DONE",
                        "statusMessage": "Instance was preempted.",
                    }
                    for index, (name, when) in enumerate(events)
                ],
            },
        )


_INSTANCE_LIST = re.compile(r"/compute/v1/projects/[^/]+/zones/[^/]+/instances")
_FILTER_TERM = re.compile(r'\(\s*([A-Za-z][\w.-]*)\s*=\s*"([^"]*)"\s*\)')


def _operation(project: str, zone: str) -> dict[str, Any]:
    return {
        "kind": "compute#operation",
        "name": "operation-1733400000000-5f0c1b2a",
        "zone": f"{API}/projects/{project}/zones/{zone}",
        "status": "RUNNING",
    }


def _matches(body: dict[str, Any], key: str, value: str) -> bool:
    if key.startswith("labels."):
        return (body.get("labels") or {}).get(key.removeprefix("labels.")) == value
    return str(body.get(key)) == value


def quota_list(quotas: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    return [
        {"metric": metric, "limit": limit, "usage": usage}
        for metric, (limit, usage) in quotas.items()
    ]


def _storage_object(bucket: str, name: str) -> dict[str, Any]:
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/1",
        "name": name,
        "bucket": bucket,
        "generation": "1",
        "size": "0",
    }


def error_body(status: int, message: str, reason: str, domain: str = "global") -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }


def guest_attributes(keys: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "compute#guestAttributes",
        "queryPath": "hostkeys/",
        "queryValue": {
            "items": [
                {"namespace": "hostkeys", "key": key, "value": value} for key, value in keys.items()
            ]
        },
    }


@contextmanager
def running() -> Iterator[FakeCompute]:
    """A FakeCompute serving on a free loopback port for the duration of the block."""
    fake: FakeCompute

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                sent = json.loads(raw) if raw else {}
            except ValueError:
                sent = {}
            fake.requests.append((method, parsed.path, parse_qs(parsed.query)))
            status, body = fake.respond(
                method, parsed.path, parse_qs(parsed.query), sent if isinstance(sent, dict) else {}
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeCompute(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
