"""What the dashboard serves, kept up to date in the background: one sampling thread per
cluster (orchestrate/metrics.Sampler: one round every REFRESH_S over warm connections, a
history of each node's and GPU's utilization) and one thread reading every cluster's
overview (orchestrate/overview.py) every OVERVIEW_S. The page reads `snapshot()`."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.orchestrate.watch.metrics import REFRESH_S, Frame, NodeSample, Sampler
from dlvm_cluster.orchestrate.watch.overview import ClusterView, cluster_view
from dlvm_cluster.state import ClusterState, list_clusters

HISTORY = 150  # samples kept per series: five minutes at one every two seconds
OVERVIEW_S = 10.0
RETRY_S = 10.0  # after a sampler failed as a whole (no inventory, no key), try again then


@dataclass
class _Series:
    """One node's history: when, CPU %, memory %, and each GPU's utilization %."""

    times: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    cpu: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    memory: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    gpus: dict[int, deque[float | None]] = field(default_factory=dict)

    def add(self, when: float, node: NodeSample) -> None:
        self.times.append(when)
        self.cpu.append(node.cpu_percent)
        used, total = node.memory_used_bytes, node.memory_total_bytes
        self.memory.append(100.0 * used / total if used is not None and total else None)
        seen = set()
        for gpu in node.gpus:
            seen.add(gpu.index)
            if gpu.index not in self.gpus:
                # a GPU that appears later has no history before: pad so times line up
                self.gpus[gpu.index] = deque([None] * (len(self.times) - 1), maxlen=HISTORY)
            self.gpus[gpu.index].append(gpu.util_percent)
        for index, series in self.gpus.items():
            if index not in seen:
                series.append(None)

    def document(self) -> dict[str, Any]:
        return {
            "t": list(self.times),
            "cpu": list(self.cpu),
            "memory": list(self.memory),
            "gpus": {str(index): list(values) for index, values in sorted(self.gpus.items())},
        }


@dataclass
class _Cluster:
    view: ClusterView | None = None
    frame: Frame | None = None
    error: str = ""  # why sampling failed as a whole
    history: dict[str, _Series] = field(default_factory=dict)
    thread: threading.Thread | None = None


class Collector:
    """Background collection for the dashboard; `start()`, then `snapshot()` any time, then
    `stop()` (which closes every connection the samplers opened)."""

    def __init__(self, *, refresh: float = REFRESH_S, overview: float = OVERVIEW_S) -> None:
        self.refresh = refresh
        self.overview_every = overview
        self._lock = threading.Lock()
        self._clusters: dict[str, _Cluster] = {}
        self._stop = threading.Event()
        self._overview_thread = threading.Thread(
            target=self._overview_loop, name="dashboard-overview", daemon=True
        )

    def start(self) -> None:
        self._overview_thread.start()

    def stop(self, wait: float = 15.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + wait
        threads = [self._overview_thread]
        with self._lock:
            threads += [c.thread for c in self._clusters.values() if c.thread is not None]
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _overview_loop(self) -> None:
        while not self._stop.is_set():
            states = list_clusters()
            names = {state.name for state in states}
            for state in states:
                try:
                    view = cluster_view(state)
                except Exception as error:  # a damaged state dir must not stop the page
                    view = ClusterView(state.name, "", problem=_described(error))
                with self._lock:
                    entry = self._clusters.setdefault(state.name, _Cluster())
                    entry.view = view
                    start = view.nodes and (entry.thread is None or not entry.thread.is_alive())
                if start:
                    thread = threading.Thread(
                        target=self._sample_loop,
                        args=(state,),
                        name=f"dashboard-{state.name}",
                        daemon=True,
                    )
                    with self._lock:
                        entry.thread = thread
                    thread.start()
            with self._lock:
                for gone in set(self._clusters) - names:
                    del self._clusters[gone]
            self._stop.wait(self.overview_every)

    def _sample_loop(self, state: ClusterState) -> None:
        while not self._stop.is_set():
            try:
                with Sampler(state) as sampler:
                    while not self._stop.is_set() and state.root.is_dir():
                        started = time.monotonic()
                        self._record(state.name, sampler.frame())
                        self._stop.wait(max(0.0, self.refresh - (time.monotonic() - started)))
            except Exception as error:  # one cluster's failure must not stop the others
                with self._lock:
                    entry = self._clusters.get(state.name)
                    if entry is not None:
                        entry.error = _described(error)
            if not state.root.is_dir():
                return
            self._stop.wait(RETRY_S)

    def _record(self, name: str, frame: Frame) -> None:
        with self._lock:
            entry = self._clusters.setdefault(name, _Cluster())
            entry.frame, entry.error = frame, ""
            names = {node.name for node in frame.nodes}
            for node in frame.nodes:
                entry.history.setdefault(node.name, _Series()).add(frame.taken_at, node)
            for gone in set(entry.history) - names:
                del entry.history[gone]

    def snapshot(self) -> dict[str, Any]:
        """The document the page reads (GET /api/state)."""
        with self._lock:
            clusters = [
                _cluster_document(name, entry) for name, entry in sorted(self._clusters.items())
            ]
        return {"generated": time.time(), "refresh_s": self.refresh, "clusters": clusters}


def _cluster_document(name: str, entry: _Cluster) -> dict[str, Any]:
    view = entry.view or ClusterView(name, "")
    frame = entry.frame
    samples = {node.name: node for node in frame.nodes} if frame else {}
    nodes = []
    for node in view.nodes:
        sample = samples.get(node.name)
        series = entry.history.get(node.name)
        nodes.append(
            {
                **dataclasses.asdict(node),
                "sample": _sample_document(sample) if sample else None,
                "history": series.document() if series else None,
            }
        )
    jobs = [
        {
            **dataclasses.asdict(job),
            "events": [{"time": when, "text": text} for when, text in job.events],
        }
        for job in view.jobs
    ]
    return {
        "name": view.name,
        "kind": view.kind,
        "price": view.price,
        "spend": view.spend,
        "autostop": view.autostop,
        "problem": view.problem,
        "sampling_error": entry.error,
        "taken_at": frame.taken_at if frame else None,
        "through": frame.through if frame else "",
        "nodes": nodes,
        "jobs": jobs,
    }


def _described(error: Exception) -> str:
    """An error as the page shows it: dlvm's own by their message, others with their type."""
    return str(error) if isinstance(error, DlvmError) else f"{type(error).__name__}: {error}"


def _sample_document(sample: NodeSample) -> dict[str, Any]:
    data = dataclasses.asdict(sample)
    data["answered"] = sample.answered
    return data
