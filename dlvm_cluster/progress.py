"""How library code reports progress without printing: the CLI passes an implementation."""

from __future__ import annotations

from typing import Protocol

from dlvm_cluster.inventory import Node
from dlvm_cluster.provision.terraform import TerraformEvent


class Progress(Protocol):
    def stage(self, text: str) -> None:
        """A new step of a long command begins (Terraform, SSH readiness, sync, setup...)."""

    def note(self, text: str) -> None:
        """Something the user should see, that is not an error."""

    def terraform(self, event: TerraformEvent) -> None:
        """An event streamed from Terraform."""

    def line(self, node: Node, stream: str, text: str) -> None:
        """One line of a node's output."""


class SilentProgress:
    """For tests and --quiet: reports nothing."""

    def stage(self, text: str) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def terraform(self, event: TerraformEvent) -> None:
        return None

    def line(self, node: Node, stream: str, text: str) -> None:
        return None
