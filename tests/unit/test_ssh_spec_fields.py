"""The ssh provider's host, user and host_key, and the cluster name, are checked where the file
is read: each bad value exits 2 at file:line with its field, before anything is written."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from harness import Cli

from dlvm_cluster.errors import SpecError
from dlvm_cluster.providers import load_spec_text

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQe0b1bHqvFXaP0Yb3dXvN7jSRAi3lDRsQFZ3tjv7bC"


def ssh_spec(host: str = '"10.0.0.1"', user: str = "ubuntu", key: str | None = None) -> str:
    """A cluster file with one ssh host; values are written as given (quote them yourself)."""
    key_line = f"\n      host_key: {key}" if key is not None else ""
    return (
        "name: demo\n"
        "provider:\n"
        "  kind: ssh\n"
        "  hosts:\n"
        f"    - host: {host}\n"
        f"      user: {user}{key_line}\n"
        "nodes:\n"
        "  count: 1\n"
    )


def refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("cluster.yaml"))
    return caught.value


def wrong_type_key(key_type: str) -> str:
    blob = base64.b64encode(len(key_type).to_bytes(4, "big") + key_type.encode() + b"x" * 32)
    return blob.decode()


@pytest.mark.parametrize(
    "host",
    [
        '"10.0.0.1\\n  ProxyCommand touch /tmp/owned"',  # the reproduction
        '"gpu-1.example.com\\rx"',
        '"-oProxyCommand=touch /tmp/owned"',
        '"gpu 1"',
        '"gpu\\t1"',
        '"host\\u0000"',
        '"-gpu"',
        '"gpu_1;rm"',
        '"[10.0.0.1]:22"',
        '"fe80::1%eth0 x"',
        '"fe80::1%"',  # a scope mark with no scope
    ],
)
def test_a_bad_host_is_refused_at_its_line(host: str) -> None:
    error = refused(ssh_spec(host=host))
    assert error.field == "provider.hosts[0].host"
    assert error.location is not None and error.location.line == 5
    assert "IP address or a DNS name" in error.detail
    assert "\n" not in str(error) and "\r" not in str(error)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "2001:db8::1", "fe80::1%eth0", "gpu-1", "gpu-1.example.com.", "a_b"]
)
def test_addresses_and_dns_names_load(host: str) -> None:
    loaded = load_spec_text(ssh_spec(host=f'"{host}"'), Path("cluster.yaml"))
    assert loaded.spec.provider.hosts[0].host == host  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "user", ['"-oProxyCommand=x"', '"root\\nHost *"', '"a b"', '"a:b"', '"a@b"', "x" * 33]
)
def test_a_bad_user_is_refused(user: str) -> None:
    error = refused(ssh_spec(user=user))
    assert error.field == "provider.hosts[0].user"
    assert error.location is not None and error.location.line == 6
    assert "must be a user name" in error.detail


@pytest.mark.parametrize("user", ["root", "ubuntu", "john.doe", "_svc", "Admin-2", "x" * 32])
def test_posix_user_names_load(user: str) -> None:
    load_spec_text(ssh_spec(user=user), Path("cluster.yaml"))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("garbage", "TYPE BASE64"),
        ("ssh-foo AAAA", "'ssh-foo' is not a host key type"),
        ("ssh-ed25519 not-base64!", "not valid base64"),
        (f"ssh-ed25519 {wrong_type_key('ssh-rsa')}", "not a ssh-ed25519 key"),
        ("ssh-ed25519 AAAA", "not a ssh-ed25519 key"),
        (f'"{ED25519}\\nHost *"', "control characters"),
    ],
)
def test_a_bad_host_key_is_refused(key: str, message: str) -> None:
    error = refused(ssh_spec(key=key))
    assert error.field == "provider.hosts[0].host_key"
    assert error.location is not None and error.location.line == 7
    assert message in error.detail


def test_a_host_key_with_its_comment_loads() -> None:
    loaded = load_spec_text(ssh_spec(key=f"{ED25519} root@gpu-1"), Path("cluster.yaml"))
    assert loaded.spec.provider.hosts[0].host_key.startswith("ssh-ed25519 AAAA")  # type: ignore[union-attr]


def test_an_identity_file_with_a_newline_is_refused() -> None:
    text = ssh_spec().replace("  kind: ssh\n", '  kind: ssh\n  identity_file: "k\\nHost *"\n')
    error = refused(text)
    assert error.field == "provider.identity_file"
    assert "control characters" in error.detail


@pytest.mark.parametrize("name", ["bad-", "a--", "x-"])
def test_a_cluster_name_ending_in_a_hyphen_is_refused_on_every_provider(name: str) -> None:
    for text in (ssh_spec(), "name: demo\nprovider: {kind: local}\nnodes: {count: 1}\n"):
        error = refused(text.replace("name: demo", f"name: {name}"))
        assert error.field == "name"
        assert "end with a letter or digit" in error.detail


def test_the_name_length_limit_is_kept() -> None:
    text = "name: demo\nprovider: {kind: local}\nnodes: {count: 1}\n"
    load_spec_text(text.replace("demo", "a" * 40), Path("cluster.yaml"))
    assert refused(text.replace("demo", "a" * 41)).field == "name"


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("host", ssh_spec(host='"10.0.0.1\\n  ProxyCommand touch /tmp/dlvm-owned"')),
        ("host_key", ssh_spec(key="garbage")),
        ("name", "name: bad-\nprovider: {kind: local}\nnodes: {count: 1}\n"),
    ],
)
def test_up_exits_2_and_stores_nothing(field: str, text: str, tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    home = tmp_path / "home"
    result = Cli(home).run("up", str(spec), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cluster.yaml:" in result.stderr and field in result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "clusters").exists()
