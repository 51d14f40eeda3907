"""OS Login: the cluster's public key on the user's OS Login profile (the OS Login API's
users.importSshPublicKey), and the POSIX user name the profile gives, which dlvm then logs
in as. The nodes' sshd asks OS Login for the keys of that user; IAM
(roles/compute.osAdminLogin, for sudo) decides whether the login is allowed.

The key is recorded in the state dir with its fingerprint, so `down` takes it off the
profile again (profiles have a size limit, and a key of a cluster that is gone must not
keep opening anything).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import user_problem
from dlvm_cluster.providers.gcp.rest import OAUTH2, OS_LOGIN, GoogleRest
from dlvm_cluster.state import ClusterState

RECORD = "oslogin.json"
GCLOUD_TIMEOUT = 30.0
HINT = (
    "enable the OS Login API (gcloud services enable oslogin.googleapis.com) and make sure your "
    "account may use it; logging in also needs roles/compute.osAdminLogin on the project"
)


def caller_email(rest: GoogleRest) -> str:
    """The email of the identity dlvm acts as: a service account's own, else the owner of the
    access token (tokeninfo names it when the token carries the email scope), else the
    account the Google Cloud CLI is logged in as."""
    credentials = rest.credentials
    email = getattr(credentials, "service_account_email", "")
    if isinstance(email, str) and "@" in email:
        return email
    token = getattr(credentials, "token", None)
    status, data, message = rest.call(
        "GET", OAUTH2, "/tokeninfo", params={"access_token": str(token or "")}
    )
    found = data.get("email")
    if status == 200 and isinstance(found, str) and "@" in found:
        return found
    account = _gcloud_account()
    if account:
        return account
    raise ProvisionError(
        f"cannot tell which Google account dlvm acts as, for OS Login: {message or status}",
        hint="log in with `gcloud auth login` (dlvm asks gcloud for the account when the "
        "credentials' token does not name it), or use a service-account key",
    )


def _gcloud_account() -> str:
    """`gcloud config get-value account`, or "" without gcloud or an account."""
    program = shutil.which("gcloud")
    if program is None:
        return ""
    try:
        done = subprocess.run(
            [program, "config", "get-value", "account"],
            capture_output=True,
            text=True,
            timeout=GCLOUD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    account = done.stdout.strip()
    return account if done.returncode == 0 and "@" in account and " " not in account else ""


def register_key(rest: GoogleRest, state: ClusterState, project: str, public_key: str) -> str:
    """Put `public_key` on the caller's OS Login profile; return the POSIX user name."""
    email = caller_email(rest)
    status, data, message = rest.call(
        "POST",
        OS_LOGIN,
        f"/v1/users/{email}:importSshPublicKey",
        params={"projectId": project},
        body={"key": public_key.strip()},
    )
    if status != 200:
        raise ProvisionError(
            f"OS Login refused the cluster's key for {email}: HTTP {status} {message}", hint=HINT
        )
    profile = data.get("loginProfile")
    user = _posix_user(profile)
    if not user:
        raise ProvisionError(
            f"the OS Login profile of {email} has no POSIX account for project {project}",
            hint=HINT,
        )
    fingerprint = _fingerprint(profile, public_key)
    (state.terraform_dir / RECORD).write_text(
        json.dumps({"user": email, "fingerprint": fingerprint, "posix_user": user})
    )
    return user


def _posix_user(profile: Any) -> str:
    accounts = profile.get("posixAccounts") if isinstance(profile, dict) else None
    if not isinstance(accounts, list):
        return ""
    named = [a for a in accounts if isinstance(a, dict) and isinstance(a.get("username"), str)]
    named.sort(key=lambda account: account.get("primary") is not True)
    for account in named:
        if not user_problem(account["username"]):
            return str(account["username"])
    return ""


def _fingerprint(profile: Any, public_key: str) -> str:
    keys = profile.get("sshPublicKeys") if isinstance(profile, dict) else None
    if not isinstance(keys, dict):
        return ""
    wanted = public_key.split()[:2]
    for fingerprint, entry in keys.items():
        if isinstance(entry, dict) and str(entry.get("key", "")).split()[:2] == wanted:
            return str(entry.get("fingerprint") or fingerprint)
    return ""


def remove_key(rest: GoogleRest, state: ClusterState) -> str:
    """Take the cluster's key off the OS Login profile it was put on; a problem is returned
    as a sentence (the cluster is gone either way), "" when done or nothing was recorded."""
    path = state.terraform_dir / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    user, fingerprint = record.get("user"), record.get("fingerprint")
    if not (
        isinstance(user, str)
        and re.fullmatch(r"[^/@\s]+@[^/@\s]+", user)
        and isinstance(fingerprint, str)
        and re.fullmatch(r"[0-9A-Za-z_-]+", fingerprint)
    ):
        return ""  # not what register_key writes: nothing of it goes into a URL
    status, _, message = rest.call(
        "DELETE", OS_LOGIN, f"/v1/users/{user}/sshPublicKeys/{fingerprint}"
    )
    if status not in (200, 404):
        return (
            f"could not take the cluster's key off the OS Login profile of {user} "
            f"(HTTP {status} {message}); remove it with: gcloud compute os-login ssh-keys "
            f"remove --key={fingerprint}"
        )
    path.unlink(missing_ok=True)
    return ""
