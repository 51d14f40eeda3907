"""A Terraform root module + terraform.tfvars.json, written to a directory.

The module is copied as shipped (readable, and the user's to take over); everything specific
to the cluster is in the tfvars, which each provider computes from the spec, so `dlvm render`
shows exactly what `up` applies.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import StateError

TFVARS = "terraform.tfvars.json"


@dataclass(frozen=True)
class RenderedModule:
    provider: str
    source: Path
    tfvars: dict[str, Any]

    def write(self, target: Path) -> bool:
        """Write module files and tfvars into `target`; returns whether anything changed."""
        changed = False
        try:
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            for item in sorted(self.source.iterdir()):
                if not item.is_file():
                    continue
                destination = target / item.name
                if not destination.exists() or destination.read_bytes() != item.read_bytes():
                    shutil.copy2(item, destination)
                    changed = True
            text = json.dumps(self.tfvars, indent=2, sort_keys=True) + "\n"
            tfvars = target / TFVARS
            if not tfvars.exists() or tfvars.read_text() != text:
                tfvars.write_text(text)
                tfvars.chmod(0o600)
                changed = True
        except OSError as exc:
            raise StateError(f"cannot write the Terraform module to {target}: {exc}") from exc
        return changed
