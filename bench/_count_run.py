"""Run one `dlvm` command line in this process with counters on what it opens and builds:
SSH connections (per node), SSH pools, provider constructions, and state-file reads (per
file name). The counts are written as JSON to the file named by DLVM_COUNT_OUT at exit.

    DLVM_COUNT_OUT=counts.json python bench/_count_run.py up cluster.yaml --yes

Not a benchmark itself: bench/connections.py runs it. It counts through the project's own
classes (Connection.open, SshPool, providers.for_kind, ClusterState.read_json), which every
version of the code has, so a run before and after a change counts the same things.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

COUNTS: dict[str, Counter[str]] = {
    "connections": Counter(),
    "pools": Counter(),
    "providers": Counter(),
    "reads": Counter(),
}
_LOCK = threading.Lock()


def _count(kind: str, key: str) -> None:
    with _LOCK:
        COUNTS[kind][key] += 1


def install() -> None:
    from dlvm_cluster import providers, state
    from dlvm_cluster.remote import connection, pool

    opened = connection.Connection.open.__func__  # type: ignore[attr-defined]

    def counted_open(cls: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
        _count("connections", node.name)
        return opened(cls, node, *args, **kwargs)

    connection.Connection.open = classmethod(counted_open)  # type: ignore[assignment,method-assign]

    pool_init = pool.SshPool.__init__

    def counted_pool(self: Any, *args: Any, **kwargs: Any) -> None:
        _count("pools", "SshPool")
        pool_init(self, *args, **kwargs)

    pool.SshPool.__init__ = counted_pool  # type: ignore[method-assign]

    for_kind = providers.for_kind

    def counted_for_kind(kind: str, *args: Any, **kwargs: Any) -> Any:
        _count("providers", kind)
        return for_kind(kind, *args, **kwargs)

    providers.for_kind = counted_for_kind  # type: ignore[assignment]

    read_json = state.ClusterState.read_json

    def counted_read(self: Any, path: Path) -> Any:
        name = Path(path).name
        if Path(path).parent.name == "jobs":
            name = "jobs/" + ("<job>.json" if name.endswith(".json") else name)
        _count("reads", name)
        return read_json(self, path)

    state.ClusterState.read_json = counted_read  # type: ignore[method-assign]


def _write() -> None:
    out = os.environ.get("DLVM_COUNT_OUT")
    if out:
        with _LOCK:
            data = {kind: dict(counter) for kind, counter in COUNTS.items()}
        Path(out).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    install()
    atexit.register(_write)
    sys.argv = ["dlvm", *sys.argv[1:]]
    from dlvm_cluster.cli.fast_path import main

    main()
