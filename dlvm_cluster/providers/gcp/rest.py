"""Google APIs dlvm calls over plain HTTPS with the ADC session (those google-cloud-compute
does not cover: Cloud Storage, Organization Policy, OS Login, IAM), and the one way their
answers and failures are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlvm_cluster.errors import ProvisionError

# Said wherever Google refuses or lacks this machine's credentials.
NO_CREDENTIALS_HINT = (
    "run `gcloud auth application-default login` (or point GOOGLE_APPLICATION_CREDENTIALS at a "
    "service-account key file); Terraform's google provider uses the same credentials"
)

STORAGE = "https://storage.googleapis.com"
ORG_POLICY = "https://orgpolicy.googleapis.com"
OS_LOGIN = "https://oslogin.googleapis.com"
IAM = "https://iam.googleapis.com"
OAUTH2 = "https://oauth2.googleapis.com"


@dataclass(frozen=True)
class GoogleRest:
    """An authorized session; `endpoint` (tests) sends every service's calls there instead."""

    session: Any  # google.auth.transport.requests.AuthorizedSession
    endpoint: str | None
    timeout: float

    @property
    def credentials(self) -> Any:
        return self.session.credentials

    def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any], str]:
        """(HTTP status, the JSON body or {}, the error message or "") of one request;
        credentials and connection failures become a ProvisionError naming `path`."""
        from google.auth import exceptions as auth

        url = f"{self.endpoint or service}{path}"
        try:
            response = self.session.request(
                method, url, params=params, json=body, timeout=self.timeout
            )
        except (auth.RefreshError, auth.DefaultCredentialsError) as exc:
            raise ProvisionError(
                f"Google Cloud refused the credentials calling {service}: {exc}",
                hint=NO_CREDENTIALS_HINT,
            ) from exc
        except (auth.TransportError, OSError) as exc:  # requests' errors are OSErrors
            raise ProvisionError(
                f"cannot reach {service}: {exc}",
                hint="check the network connection and proxy settings, then run the command again",
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if 200 <= response.status_code < 300:
            return response.status_code, data, ""
        try:
            message = str(data["error"]["message"])
        except (KeyError, TypeError):
            message = response.text[:200]
        return response.status_code, data, message


def google_rest(credentials: Any, endpoint: str | None, timeout: float) -> GoogleRest:
    from google.auth.transport.requests import AuthorizedSession

    session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return GoogleRest(session, endpoint, timeout)
