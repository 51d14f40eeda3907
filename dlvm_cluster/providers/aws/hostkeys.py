"""Nodes' SSH host keys, read from each instance's console output through the EC2 API: pinned
before the first connection, so no key is trusted on first use.

cloud-init prints the host's public keys to the serial console at the end of its first boot,
between `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----`. The API is
authenticated and the text comes from the instance's own console. The console is the node's
to write, so the block is parsed strictly: only the known key types, only blobs that decode to
a key of the type named, and two blocks that disagree (the text was tampered with, or the host
changed its keys) stop `up` rather than pick one.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.aws.api import AwsClients, call, error_code
from dlvm_cluster.providers.terraformed import poll_host_keys

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
# Best first: what dlvm pins when the host has several.
PREFERRED_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")
_KEY = re.compile(
    r"(?:^|\s)(" + "|".join(map(re.escape, PREFERRED_TYPES)) + r") ([A-Za-z0-9+/]+={0,2})(?:\s|$)"
)
# cloud-init's final stage runs a minute or two after boot; GPU instances boot slowly.
ATTEMPTS = 40
INTERVAL = 15.0


def _blob_names(key_type: str, blob: str) -> bool:
    """Whether `blob` is base64 of an SSH public key whose own type field is `key_type`."""
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
    except (binascii.Error, ValueError, struct.error):
        return False
    return raw[4 : 4 + length] == key_type.encode() and len(raw) > 4 + length


def _blocks(text: str) -> list[dict[str, str]]:
    """Each BEGIN..END block of `text` as {key type: blob}."""
    found: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if BEGIN in line:
            current = {}
        elif END in line and current is not None:
            found.append(current)
            current = None
        elif current is not None:
            match = _KEY.search(line)
            if match and _blob_names(match.group(1), match.group(2)):
                current.setdefault(match.group(1), match.group(2))
    return found


def host_key_from_console(text: str, instance: str) -> str | None:
    """The preferred host key ("TYPE BASE64") the console shows, None while it shows none;
    raises when it shows two different sets of keys."""
    blocks = [block for block in _blocks(text) if block]
    if not blocks:
        return None
    if any(block != blocks[0] for block in blocks[1:]):
        raise ProvisionError(
            f"the console of {instance} shows two different sets of SSH host keys: dlvm will "
            "not pick one",
            hint="the instance's console output was written by something other than its "
            "first boot; terminate the instance (or run `dlvm up` after deleting it) and "
            "look at its console output",
        )
    keys = blocks[0]
    for key_type in PREFERRED_TYPES:
        if key_type in keys:
            return f"{key_type} {keys[key_type]}"
    return None


def console_text(clients: AwsClients, instance: str) -> str:
    """The instance's console output (the newest on Nitro instances); botocore decodes the
    API's base64 itself."""

    def fetch(latest: bool) -> Any:
        arguments: dict[str, Any] = {"InstanceId": instance}
        if latest:
            arguments["Latest"] = True
        return clients.ec2.get_console_output(**arguments)

    try:
        answer = call(f"reading the console of {instance}", lambda: fetch(True))
    except Exception as exc:
        if error_code(exc) not in ("UnsupportedOperation", "InvalidParameterCombination"):
            raise
        answer = call(f"reading the console of {instance}", lambda: fetch(False))
    return str(answer.get("Output") or "")


def read_host_keys(
    clients: AwsClients,
    instances: Mapping[str, str],
    *,
    attempts: int = ATTEMPTS,
    interval: float = INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """node name -> "TYPE BASE64" for each node of `instances` (node name -> instance id),
    waiting until each instance's console shows its keys."""
    keys, pending = poll_host_keys(
        instances,
        lambda instance: host_key_from_console(console_text(clients, instance), instance),
        attempts=attempts,
        interval=interval,
        sleep=sleep,
    )
    if not pending:
        return keys
    raise ProvisionError(
        f"{', '.join(pending)} showed no SSH host key in the console after "
        f"{attempts * interval:.0f}s",
        hint="the node may still be booting (run `dlvm up` again); an AMI without cloud-init "
        "prints no keys: use a Deep Learning AMI or an Ubuntu one",
    )


def instance_ids(outputs: Mapping[str, Any]) -> dict[str, str]:
    """node name -> instance id from terraform/aws's `nodes` output, in rank order."""
    raw = outputs.get("nodes")
    if not isinstance(raw, Mapping):
        raise ProvisionError(
            "Terraform produced no `nodes` output",
            hint="the module in the state dir may have been edited; run `dlvm up` again",
        )
    ordered: Sequence[tuple[str, Any]] = sorted(raw.items(), key=lambda item: int(item[1]["rank"]))
    return {name: str(item["instance"]) for name, item in ordered}
