"""The one error tree of dlvm. Library code raises these; only the CLI prints them.

    DlvmError                 base: message + hint (what the user should do) + exit code
    ├── SpecError             bad cluster file or bad command line (exit 2), with file:line:column
    ├── UsageError            a command line that cannot be honoured (exit 2)
    ├── StateError            state dir missing, locked, or unsafe (exit 3)
    ├── ProvisionError        Terraform or the provider failed (exit 3)
    └── RemoteError           a node could not be reached or a remote command failed (exit 1)

Foreign exceptions (pydantic, YAML, Terraform, paramiko, OSError) are translated where they
enter the package, with ``raise ... from`` so ``--debug`` still shows the cause.
"""

from __future__ import annotations

from dataclasses import dataclass


class DlvmError(Exception):
    """Base of every error dlvm reports to its user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SourceLocation:
    """Where in a file a problem is (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(DlvmError):
    """The cluster file is not valid; the message names file:line:column and the field."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        location: SourceLocation | None = None,
        field: str = "",
        hint: str = "",
    ) -> None:
        prefix = f"{location}: " if location else ""
        where = f"{field}: " if field else ""
        super().__init__(f"{prefix}{where}{message}", hint=hint)
        self.location = location
        self.field = field
        self.detail = message
        self.problems: tuple[SpecError, ...] = (self,)
        """Every problem of the file when it has several (spec.explain.combine), first first."""


class UsageError(DlvmError):
    """A command line that cannot be honoured (unknown cluster, bad node selector, ...)."""

    exit_code = 2


class StateError(DlvmError):
    """The state dir is missing, held by another command, or has unsafe permissions."""

    exit_code = 3


class ProvisionError(DlvmError):
    """Terraform or the provider could not create, change or destroy the cluster."""

    exit_code = 3


class RemoteError(DlvmError):
    """A node could not be reached, or a remote command or job failed."""

    exit_code = 1
