"""Host keys read from an instance's console output: the block cloud-init prints, parsed as
text a node writes (strictly), and the EC2 call that fetches it, against moto."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from aws_moto import moto_clients, run_node
from botocore.stub import Stubber
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.aws.hostkeys import (
    BEGIN,
    END,
    host_key_from_console,
    read_host_keys,
)


def openssh(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


ED25519 = openssh(ed25519.Ed25519PrivateKey.generate())
ECDSA = openssh(ec.generate_private_key(ec.SECP256R1()))


def console(*keys: str, noise: str = "") -> str:
    """Console text as a first boot leaves it: kernel lines, cloud-init's block, more lines."""
    block = "\n".join(f"{key} root@ip-10-72-0-5" for key in keys)
    return (
        "[    0.000000] Linux version 6.8.0-1021-aws\n"
        f"{noise}"
        "ci-info: no authorized SSH keys fingerprints found for user ubuntu.\n"
        f"{BEGIN}\n{block}\n{END}\n"
        "Cloud-init v. 24.1 finished at Sat, 05 Dec 2026 18:00:00 +0000. Up 41.2 seconds\n"
    )


def test_the_preferred_key_of_the_block_is_pinned() -> None:
    assert host_key_from_console(console(ECDSA, ED25519), "i-1") == ED25519
    assert host_key_from_console(console(ECDSA), "i-1") == ECDSA


def test_no_block_yet_means_no_key() -> None:
    assert host_key_from_console("[    0.0] Linux version 6.8\nbooting\n", "i-1") is None
    assert host_key_from_console(f"{BEGIN}\n{ED25519}\n", "i-1") is None  # not ended yet


def test_a_blob_that_is_not_a_key_of_its_type_is_ignored() -> None:
    """A line naming ssh-ed25519 with another type's key (or with junk) is no key."""
    ecdsa_blob = ECDSA.split()[1]
    junk = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519").decode()  # the type, no key
    text = console(f"ssh-ed25519 {ecdsa_blob}", f"ssh-ed25519 {junk}", ECDSA)
    assert host_key_from_console(text, "i-1") == ECDSA


def test_two_blocks_that_disagree_stop() -> None:
    """Something on the node printed a block of its own before cloud-init's: dlvm refuses to
    choose rather than pin whichever comes first or last."""
    forged = console(ED25519)
    real = console(openssh(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(ProvisionError, match="two different sets of SSH host keys"):
        host_key_from_console(forged + real, "i-1")
    # The same block twice (a reboot prints it again) is one set of keys.
    assert host_key_from_console(console(ED25519) + console(ED25519), "i-1") == ED25519


def test_the_console_is_read_through_ec2_until_the_keys_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto's console holds no key block, as a node still booting: dlvm waits and then gives
    up with what to do; with the block there (a stubbed answer, base64 as EC2 sends it and
    checked against the SDK's model of GetConsoleOutput) the key is read."""
    with moto_clients(monkeypatch) as clients:
        instance = run_node(clients, "demo", "node-0")
        waits: list[float] = []
        with pytest.raises(ProvisionError, match="node-0 showed no SSH host key"):
            read_host_keys(
                clients, {"node-0": instance}, attempts=3, interval=5, sleep=waits.append
            )
        assert waits == [5, 5]
    stubbed = dataclasses.replace(clients, ec2=clients.ec2)
    with Stubber(stubbed.ec2) as stub:
        stub.add_response(
            "get_console_output",
            {
                "InstanceId": "i-0abc",
                "Output": base64.b64encode(console(ED25519).encode()).decode(),
            },
            {"InstanceId": "i-0abc", "Latest": True},
        )
        assert read_host_keys(stubbed, {"node-0": "i-0abc"}, sleep=waits.append) == {
            "node-0": ED25519
        }
