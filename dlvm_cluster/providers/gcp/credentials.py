"""Credentials and Compute Engine API clients (and the REST session for Google's other APIs:
Cloud Storage, Organization Policy, OS Login, IAM), and the translation of the API's errors.

Credentials come from Application Default Credentials, the same ones Terraform's google
provider uses, so `dlvm` and Terraform always act as the same identity. Tests pass anonymous
credentials and an `api_endpoint` on 127.0.0.1 instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.rest import NO_CREDENTIALS_HINT, google_rest

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REQUEST_TIMEOUT = 30.0

T = TypeVar("T")


def default_credentials() -> Any:
    """Application Default Credentials, or a ProvisionError that says how to get them."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError as exc:
        raise ProvisionError(
            f"no Google Cloud credentials found: {exc}", hint=NO_CREDENTIALS_HINT
        ) from exc
    return credentials


@dataclass(frozen=True)
class ComputeClients:
    """One client per Compute Engine resource dlvm reads; built once, shared by every check."""

    projects: Any
    regions: Any
    zones: Any
    accelerator_types: Any
    machine_types: Any
    images: Any
    reservations: Any
    network_profiles: Any
    instances: Any
    zone_operations: Any
    rest: Any  # rest.GoogleRest: Cloud Storage, Organization Policy, OS Login, IAM
    group_managers: Any  # managed instance groups (a flex-start gang's)
    resize_requests: Any  # their resize requests


def compute_clients(credentials: Any = None, *, api_endpoint: str | None = None) -> ComputeClients:
    """Clients with `credentials` (default: ADC), talking to `api_endpoint` when given."""
    from google.cloud import compute_v1

    creds = credentials if credentials is not None else default_credentials()
    options = {"api_endpoint": api_endpoint} if api_endpoint else None

    def make(cls: Any) -> Any:
        return cls(credentials=creds, client_options=options)

    return ComputeClients(
        projects=make(compute_v1.ProjectsClient),
        regions=make(compute_v1.RegionsClient),
        zones=make(compute_v1.ZonesClient),
        accelerator_types=make(compute_v1.AcceleratorTypesClient),
        machine_types=make(compute_v1.MachineTypesClient),
        images=make(compute_v1.ImagesClient),
        reservations=make(compute_v1.ReservationsClient),
        network_profiles=make(compute_v1.NetworkProfilesClient),
        instances=make(compute_v1.InstancesClient),
        zone_operations=make(compute_v1.ZoneOperationsClient),
        rest=google_rest(creds, api_endpoint, REQUEST_TIMEOUT),
        group_managers=make(compute_v1.InstanceGroupManagersClient),
        resize_requests=make(compute_v1.InstanceGroupManagerResizeRequestsClient),
    )


def call_api(what: str, project: str, request: Callable[[], T]) -> T:
    """Run one API call; failures other than NotFound become a ProvisionError naming `what`.

    NotFound passes through because its meaning depends on the caller (a missing image family
    is an error, a missing host key is "not yet").
    """
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        return request()
    except api.NotFound:
        raise
    except (api.Unauthorized, auth.RefreshError, auth.DefaultCredentialsError) as exc:
        raise ProvisionError(
            f"Google Cloud refused the credentials while reading {what}: {_message(exc)}",
            hint=NO_CREDENTIALS_HINT,
        ) from exc
    except api.Forbidden as exc:
        raise ProvisionError(
            f"permission denied reading {what} in project {project}: {_message(exc)}",
            hint=f"enable the Compute Engine API (gcloud services enable compute.googleapis.com "
            f"--project {project}) and give your account the Compute Admin role there",
        ) from exc
    except api.GoogleAPICallError as exc:
        raise ProvisionError(
            f"the Compute Engine API failed reading {what}: {_message(exc)}",
            hint="run the same command again; if it persists, check the Google Cloud status page",
        ) from exc
    except (api.RetryError, auth.TransportError, OSError) as exc:
        # requests' ConnectionError and Timeout are OSErrors.
        raise ProvisionError(
            f"cannot reach the Compute Engine API reading {what}: {exc}",
            hint="check the network connection and proxy settings, then run the command again",
        ) from exc


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc)
    return text.splitlines()[0] if text else type(exc).__name__
