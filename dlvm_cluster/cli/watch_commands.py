"""Commands that watch clusters without changing them: `top` (a terminal view of one
cluster) and `dashboard` (a local web page about all of them)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import ClusterArg
from dlvm_cluster.cli.resolve import cluster_state


def top_cmd(
    cluster: ClusterArg,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one frame as a JSON document on stdout (for scripts) and exit."
        ),
    ] = False,
) -> None:
    """Live CPU, memory, load, disk, network and GPUs of every node, every 2 s; Ctrl-C leaves."""
    from rich.live import Live

    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.cli.top_view import render
    from dlvm_cluster.orchestrate.watch.metrics import REFRESH_S, Sampler

    state = cluster_state(cluster)
    with Sampler(state) as sampler:
        if json_output or once:
            frame = sampler.frame()
            if json_output:
                documents.print_json(documents.top(frame))
            else:
                stdout.print(render(frame))
            return
        try:
            frame = sampler.frame()
            if not stdout.is_terminal:  # a pipe or a file: one frame after another, as top -b
                while True:
                    stdout.print(render(frame))
                    sys.stdout.flush()
                    time.sleep(max(0.0, REFRESH_S - (time.time() - frame.taken_at)))
                    frame = sampler.frame()
            with Live(render(frame, live=True), console=stdout, auto_refresh=False) as live:
                while True:
                    time.sleep(max(0.0, REFRESH_S - (time.time() - frame.taken_at)))
                    frame = sampler.frame()
                    live.update(render(frame, live=True), refresh=True)
        except KeyboardInterrupt:
            return  # leaving top is no failure; the cluster was never touched


def dashboard_cmd(
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (default: any free one)."),
    ] = 0,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL only; do not open a browser.")
    ] = False,
) -> None:
    """A local web page of every cluster: nodes, live utilization, jobs, spend; read only."""
    import threading
    import webbrowser

    from dlvm_cluster.cli.display import stderr, stdout
    from dlvm_cluster.dashboard.live import Collector
    from dlvm_cluster.dashboard.server import serve
    from dlvm_cluster.errors import UsageError

    collector = Collector()
    try:
        server = serve(collector, port=port)
    except OSError as error:
        raise UsageError(
            f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}",
            hint="choose another --port, or leave it out for any free one",
        ) from None
    collector.start()
    thread = threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    stdout.print(f"dashboard: {server.url}", markup=False, soft_wrap=True)
    sys.stdout.flush()  # a script reading the URL through a pipe gets it now
    stderr.print("read only; the URL's token is the key to it. Ctrl-C stops the dashboard.")
    if not no_browser:
        webbrowser.open(server.url)
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        collector.stop()
