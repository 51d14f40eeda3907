"""The last lines of `exec` and `sync`, shared by the typer commands and the fast path
(cli/fast_path.py). Plain writes: rich is imported only to show a failure."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dlvm_cluster.remote.results import GroupResult, SyncResult


def exec_summary(result: GroupResult, *, quiet: bool) -> int:
    """Name each failed node on stderr; returns the exit code (0 only if every node did)."""
    if result.failed:
        from rich.markup import escape

        from dlvm_cluster.cli.display import stderr
        from dlvm_cluster.progress import show_controls

        for failed in result.failed:
            reason = escape(show_controls(failed.describe()))
            stderr.print(f"[red]✗[/red] {failed.node}: {reason}")
        stderr.print(f"{len(result.failed)} of {len(result.results)} node(s) failed")
        return 1
    if quiet:
        _say(f"{len(result.results)} node(s) ok")
    return 0


def sync_summary(results: Sequence[SyncResult]) -> None:
    sent = sum(r.sent_files for r in results)
    size = sum(r.sent_bytes for r in results)
    deleted = sum(r.deleted for r in results)
    _say(
        f"synced {len({r.node for r in results})} node(s): {sent} file(s) sent ({size} bytes), "
        f"{deleted} deleted"
    )


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
