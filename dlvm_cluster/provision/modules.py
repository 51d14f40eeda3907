"""Where the shipped Terraform modules live: inside the wheel, or beside the package."""

from __future__ import annotations

from pathlib import Path

from dlvm_cluster.errors import ProvisionError


def module_dir(provider: str) -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "terraform" / provider, package.parent / "terraform" / provider):
        if (candidate / "main.tf").exists():
            return candidate
    raise ProvisionError(
        f"the Terraform module for provider {provider!r} is missing from the installation",
        hint="reinstall dlvm-cluster",
    )
