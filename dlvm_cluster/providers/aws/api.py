"""The AWS clients dlvm uses (boto3), and its errors turned into ones the user can act on.

boto3 is imported inside `aws_clients`, so importing this package (or `dlvm --help`) never
loads it. Credentials come from the SDK's default chain (environment, ~/.aws, SSO, an instance
role) or from the spec's provider.profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dlvm_cluster.errors import ProvisionError

T = TypeVar("T")
NO_CREDENTIALS_HINT = (
    "configure AWS credentials: `aws configure` (or `aws sso login`), AWS_PROFILE, or "
    "provider.profile in the cluster file"
)
# Seconds one API call may take, and how often the SDK retries throttled calls.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30
MAX_ATTEMPTS = 5
# The Price List API answers in a few regions only; its prices cover every region.
PRICING_REGION = "us-east-1"


@dataclass(frozen=True)
class AwsClients:
    """boto3 clients of one region: ec2, ssm (AMI parameters), service-quotas, s3, sts, and
    the Price List API's (which answers in us-east-1 only)."""

    region: str
    ec2: Any
    ssm: Any
    quotas: Any
    s3: Any
    sts: Any
    pricing: Any


def aws_clients(region: str, profile: str | None = None) -> AwsClients:
    """The clients of `region`, with the profile's credentials (None: the default chain)."""
    import boto3
    import botocore.config
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise ProvisionError(
            f"no AWS profile {profile!r} in your AWS config", hint=NO_CREDENTIALS_HINT
        ) from exc
    config = botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )

    def client(name: str, where: str = region) -> Any:
        return session.client(name, region_name=where, config=config)

    return AwsClients(
        region=region,
        ec2=client("ec2"),
        ssm=client("ssm"),
        quotas=client("service-quotas"),
        s3=client("s3"),
        sts=client("sts"),
        pricing=client("pricing", PRICING_REGION),
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def call(what: str, run: Callable[[], T]) -> T:
    """Run one API call; credentials and permission problems become ProvisionErrors that
    say what to do. Other AWS errors propagate (callers decide what they mean)."""
    import botocore.exceptions

    try:
        return run()
    except (
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
        botocore.exceptions.TokenRetrievalError,
        botocore.exceptions.SSOTokenLoadError,
    ) as exc:
        raise ProvisionError(
            f"{what}: no usable AWS credentials", hint=NO_CREDENTIALS_HINT
        ) from exc
    except botocore.exceptions.EndpointConnectionError as exc:
        raise ProvisionError(
            f"{what}: cannot reach AWS ({exc})", hint="check the network and provider.region"
        ) from exc
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            raise ProvisionError(
                f"{what}: AWS refused it ({code})",
                hint="your IAM identity lacks a permission dlvm needs: see the README's "
                '"Running on AWS the first time" for the list',
            ) from exc
        if code in ("AuthFailure", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"):
            raise ProvisionError(
                f"{what}: AWS did not accept the credentials ({code})", hint=NO_CREDENTIALS_HINT
            ) from exc
        raise
