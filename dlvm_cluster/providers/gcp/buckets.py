"""Preflight of the spec's Cloud Storage buckets, through the Cloud Storage JSON API: each
bucket exists and can be listed, before any VM is made, so a mistyped name or a missing grant
fails in seconds instead of at the first checkpoint.

The check lists one object under the mount's PREFIX (objects.list, maxResults=1): the
permission it needs, storage.objects.list, is in both roles a mount needs
(roles/storage.objectViewer to read, roles/storage.objectUser to read and write), so a
bucket this passes is one gcsfuse can mount with that grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.config import NO_SERVICE_ACCOUNT, GcpConfig
from dlvm_cluster.spec.model import StorageMount

# Said wherever Google refuses or lacks this machine's credentials (here and in credentials).
NO_CREDENTIALS_HINT = (
    "run `gcloud auth application-default login` (or point GOOGLE_APPLICATION_CREDENTIALS at a "
    "service-account key file); Terraform's google provider uses the same credentials"
)

STORAGE_API = "https://storage.googleapis.com"
READ_WRITE_ROLE = "roles/storage.objectUser"
READ_ONLY_ROLE = "roles/storage.objectViewer"


@dataclass(frozen=True)
class BucketLister:
    """Lists a bucket's objects over HTTP, with the credentials the Compute clients use."""

    session: Any  # google.auth.transport.requests.AuthorizedSession
    endpoint: str  # scheme://host[:port] of the Cloud Storage JSON API
    timeout: float

    def list_one(self, bucket: str, prefix: str) -> tuple[int, str]:
        """(HTTP status, the error message or "") of listing one object under `prefix`."""
        response = self.session.get(
            f"{self.endpoint}/storage/v1/b/{bucket}/o",
            params={"maxResults": "1", "prefix": f"{prefix}/" if prefix else ""},
            timeout=self.timeout,
        )
        if response.status_code == 200:
            return 200, ""
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        return response.status_code, message


def bucket_lister(credentials: Any, endpoint: str | None, timeout: float) -> BucketLister:
    from google.auth.transport.requests import AuthorizedSession

    session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return BucketLister(session, endpoint or STORAGE_API, timeout)


def nodes_account(provider: GcpConfig) -> str:
    """Who the nodes act as, in words for a hint."""
    if provider.service_account in (None, NO_SERVICE_ACCOUNT):
        return (
            f"the Compute Engine default service account of {provider.project} "
            "(PROJECT_NUMBER-compute@developer.gserviceaccount.com)"
        )
    return provider.service_account


def _grant(entry: StorageMount, provider: GcpConfig) -> str:
    role = READ_ONLY_ROLE if entry.read_only else READ_WRITE_ROLE
    member = (
        provider.service_account
        if provider.service_account not in (None, NO_SERVICE_ACCOUNT)
        else "PROJECT_NUMBER-compute@developer.gserviceaccount.com"
    )
    return (
        f"grant {role} on the bucket to the nodes' service account, {nodes_account(provider)}, "
        f"and to your own account: gcloud storage buckets add-iam-policy-binding "
        f"gs://{entry.bucket_name} --member=serviceAccount:{member} --role={role}"
    )


def check_buckets(lister: BucketLister, provider: GcpConfig, storage: list[StorageMount]) -> None:
    """Raise a ProvisionError for the first bucket that does not exist or cannot be listed."""
    from google.auth import exceptions as auth

    for entry in storage:
        try:
            status, message = lister.list_one(entry.bucket_name, entry.prefix)
        except (auth.RefreshError, auth.DefaultCredentialsError) as exc:
            raise ProvisionError(
                f"Google Cloud refused the credentials while listing gs://{entry.bucket_name}: "
                f"{exc}",
                hint=NO_CREDENTIALS_HINT,
            ) from exc
        except (auth.TransportError, OSError) as exc:  # requests' errors are OSErrors
            raise ProvisionError(
                f"cannot reach the Cloud Storage API listing gs://{entry.bucket_name}: {exc}",
                hint="check the network connection and proxy settings, then run the command again",
            ) from exc
        if status == 200:
            continue
        if status == 404:
            raise ProvisionError(
                f"storage bucket gs://{entry.bucket_name} does not exist ({message})",
                hint=f"create it: gcloud storage buckets create gs://{entry.bucket_name} "
                f"--project {provider.project} --location {provider.region}, or fix the name",
            )
        if status in (401, 403):
            raise ProvisionError(
                f"storage bucket gs://{entry.bucket_name} cannot be listed: {message}",
                hint=_grant(entry, provider),
            )
        raise ProvisionError(
            f"the Cloud Storage API failed listing gs://{entry.bucket_name}: "
            f"HTTP {status} {message}",
            hint="run the same command again; if it persists, check the Google Cloud status page",
        )
