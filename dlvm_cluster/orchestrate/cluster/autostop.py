"""The idle guard on the nodes: `up` (and `start`, `scale`) copy the watcher program
(nodeside/watcher.py) to every node and run it on the head, where it decides idleness and stops
the cluster with this machine switched off; `dlvm autostop` rewrites its config; `status`
reads its heartbeat and says when it is not running.

On a node where systemd runs (PID 1), the watcher is a systemd service that restarts it;
elsewhere (the local provider's nodes) a supervisor process started in its own session does.

Minutes are 60 seconds; DLVM_AUTOSTOP_MINUTE_SECONDS makes them shorter, for tests only, so
that an idle limit of 1 minute can be seen to work in seconds (the cluster file stays in
minutes and hours).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlvm_cluster import nodeside, providers
from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NodeState, Provider
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.remote import node_json
from dlvm_cluster.remote.pool import SshPool, run_everywhere
from dlvm_cluster.shell import quote_path
from dlvm_cluster.spec.model import Autostop, ClusterSpec
from dlvm_cluster.state import ClusterState

if TYPE_CHECKING:
    from dlvm_cluster.orchestrate.cluster.context import Cluster

MINUTE_SECONDS_ENV = "DLVM_AUTOSTOP_MINUTE_SECONDS"  # for tests: seconds in a minute
WARN_MINUTES = 10  # the warning in the job log comes this long before max_hours
STALE_ROUNDS = 3  # a heartbeat older than this many rounds (plus slack): not running
STALE_SLACK = 10.0
CLOCK_SLACK = 60.0  # a time the head writes may be this far ahead of its own clock


def minute_seconds() -> float:
    try:
        value = float(os.environ.get(MINUTE_SECONDS_ENV, "60"))
    except ValueError:
        return 60.0
    return value if value > 0 else 60.0


def folder(cluster: str) -> str:
    """The watcher's folder on each node (program, config, heartbeat, log)."""
    return f"{node_dir(cluster)}/autostop"


def service_name(cluster: str) -> str:
    return f"dlvm-autostop-{cluster}"


def watcher_config(
    spec: ClusterSpec,
    autostop: Autostop,
    inventory: Inventory,
    self_stop: str,
    started_at: float,
) -> dict[str, Any]:
    minute = minute_seconds()
    idle = autostop.idle_minutes
    hang = spec.job.hang_timeout_minutes if spec.job else None
    return {
        "cluster": inventory.cluster,
        "idle_seconds": None if idle is None else idle * minute,
        "max_seconds": None if autostop.max_hours is None else autostop.max_hours * 60 * minute,
        "hang_seconds": None if hang is None else hang * minute,
        "warn_seconds": WARN_MINUTES * minute,
        "action": autostop.action,
        "interval": min(30.0, max(1.0, (idle or 30) * minute / 6)),
        "started_at": started_at,
        "node_dir": node_dir(inventory.cluster),
        "peers": [node.name for node in inventory.nodes if node.name != inventory.head.name],
        "self_stop": self_stop,
    }


def _program() -> bytes:
    return nodeside.source("watcher")


# Ends the supervisor named by $d/supervisor.pid and the watcher it runs (its process group),
# only if that PID is a watcher of this node's own network namespace (local nodes share the
# host's PIDs, and a PID left by a powered-off node may belong to anything since).
_END_SUPERVISOR = (
    'if [ -f "$d/supervisor.pid" ]; then p=$(cat "$d/supervisor.pid"); '
    'if grep -qa "watcher.py" /proc/$p/cmdline 2>/dev/null && '
    '[ "$(readlink /proc/$p/ns/net)" = "$(readlink /proc/self/ns/net)" ]; then '
    'kill -TERM -- -"$p" 2>/dev/null; fi; rm -f "$d/supervisor.pid"; fi; '
)


def _restart_script(cluster: str) -> str:
    """Stop the head's watcher (a supervisor of this node's own network namespace, found by
    its pid file and checked by its command line), then start it again: as a systemd service
    where systemd is PID 1 and sudo works, else as a supervisor in its own session."""
    where = quote_path(folder(cluster))
    unit = service_name(cluster)
    return (
        f'd={where}; cd "$d" || exit 1; {_END_SUPERVISOR}'
        "rm -f heartbeat.json; "
        'if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ] && sudo -n true 2>/dev/null; then '
        f"printf '%s\\n' '[Unit]' 'Description=dlvm autostop watcher of {cluster}' "
        "'[Service]' \"ExecStart=$(command -v python3) $d/watcher.py run $d/config.json\" "
        "'Restart=always' 'RestartSec=5' \"User=$(id -un)\" '[Install]' "
        "'WantedBy=multi-user.target' "
        f"| sudo -n tee /etc/systemd/system/{unit}.service >/dev/null && "
        f"sudo -n systemctl daemon-reload && sudo -n systemctl enable {unit} >/dev/null 2>&1 && "
        f"sudo -n systemctl restart {unit} && echo systemd; "
        "else "
        'setsid python3 "$d/watcher.py" supervise "$d/config.json" '
        '</dev/null >>"$d/watcher.log" 2>&1 & echo $! > supervisor.pid; echo supervised; fi'
    )


def _stop_script(cluster: str) -> str:
    where = quote_path(folder(cluster))
    unit = service_name(cluster)
    return (
        f"d={where}; "
        f"if [ -f /etc/systemd/system/{unit}.service ] && sudo -n true 2>/dev/null; then "
        f"sudo -n systemctl disable --now {unit} >/dev/null 2>&1; "
        f"sudo -n rm -f /etc/systemd/system/{unit}.service; fi; "
        f"{_END_SUPERVISOR}"
        'rm -f "$d/config.json" "$d/heartbeat.json"; true'
    )


def _started_at(pool: SshPool, head: Node, cluster: str) -> float | None:
    """When the running nodes started, as the head's watcher config says (the head's file:
    anything may come back; what is not a time from the past is not used)."""
    code, out, _ = pool.get(head).run(f"cat {quote_path(folder(cluster))}/config.json")
    if code != 0:
        return None
    try:
        config = node_json.loads_object(out)
        return node_json.number(config, "started_at", low=0, high=time.time() + CLOCK_SLACK)
    except node_json.NodeJsonError:
        return None


def install(
    pool: SshPool,
    inventory: Inventory,
    spec: ClusterSpec,
    provider: Provider,
    progress: Progress,
    *,
    settings: Autostop | None,
    nodes: tuple[Node, ...] | None = None,
    restarted: bool = False,
) -> None:
    """Copy the watcher to `nodes` (default: all), write its config with `settings` on the
    head and (re)start it there. `restarted`: the nodes have just started, so max_hours counts
    from now. Without settings, the watcher is stopped and its config removed."""
    cluster = inventory.cluster
    head = inventory.head
    if settings is None:
        run_everywhere(pool, [head], _stop_script(cluster), b"", "cannot stop the autostop watcher")
        return
    lacking = providers.lacking(spec.provider.kind, Feature.AUTOSTOP)
    self_stop = provider.self_stop_command(settings.action)
    if lacking is not None or self_stop is None:
        progress.note(f"warning: {lacking.message if lacking else 'autostop is not available'}")
        return
    progress.stage("autostop watcher")
    where = quote_path(folder(cluster))
    run_everywhere(
        pool,
        list(nodes if nodes is not None else inventory.nodes),
        f"mkdir -p {where} && cat > {where}/watcher.py",
        _program(),
        "cannot copy the autostop watcher",
    )
    previous = None if restarted else _started_at(pool, head, cluster)
    started_at = previous if previous is not None else time.time()
    config = watcher_config(spec, settings, inventory, self_stop, started_at)
    run_everywhere(
        pool,
        [head],
        f"cat > {where}/config.json && {_restart_script(cluster)}",
        json.dumps(config, indent=1).encode(),
        "cannot start the autostop watcher",
    )


@dataclass(frozen=True)
class WatcherState:
    """What status says of the head's watcher."""

    active: bool
    idle_for: float = 0.0
    busy: tuple[str, ...] = ()
    problem: str = ""


def watcher_state(pool: SshPool, head: Node, cluster: str) -> WatcherState:
    """Whether the head's watcher is running, from the age of its heartbeat (the node's own
    clock: this machine's may differ)."""
    beat_path = f"{quote_path(folder(cluster))}/heartbeat.json"
    try:
        code, out, _ = pool.get(head).run(f"date +%s; cat {beat_path}")
    except RemoteError as exc:
        return WatcherState(False, problem=f"the head node does not answer ({exc})")
    if code != 0:
        return WatcherState(False, problem=f"the watcher on {head.name} never reported")
    return read_heartbeat(out, head.name)


def read_heartbeat(out: str, head: str) -> WatcherState:
    """The state from the head's clock (first line) and its heartbeat.json (second). The
    head's own file: any shape may come back, so every field is checked (an `interval` of
    1e308 would keep a dead watcher fresh for ever)."""
    lines = out.strip().splitlines()
    if len(lines) < 2:
        return WatcherState(False, problem=f"the watcher on {head} never reported")
    try:
        now = node_json.finite(node_json.loads(lines[0]))
        if now is None:
            raise node_json.NodeJsonError("the head's clock is no number")
        beat = node_json.loads_object(lines[1])
        interval = node_json.number(beat, "interval", low=1, high=3600, default=30.0)
        latest = now + CLOCK_SLACK
        at = node_json.number(beat, "at", low=0, high=latest, default=None)
        started = node_json.number(beat, "started", low=0, high=latest, default=None)
        starts = node_json.number(beat, "starts", low=0, high=1e9, default=0.0)
        idle_for = node_json.number(beat, "idle_for", low=0, high=1e10, default=0.0)
        busy = node_json.texts(beat, "busy", max_items=100, max_len=300, default=())
        if at is None and started is None:
            raise node_json.NodeJsonError("neither a round nor a start")
    except node_json.NodeJsonError:
        return WatcherState(False, problem=f"the watcher on {head} left an unreadable heartbeat")
    fresh = STALE_ROUNDS * interval + STALE_SLACK
    if at is not None and now - at <= fresh:
        return WatcherState(True, idle_for=idle_for, busy=busy)
    since = f"its last round {now - at:.0f}s ago" if at is not None else "it was installed"
    if starts >= 2:
        return WatcherState(
            False,
            problem=f"the watcher on {head} keeps restarting without completing a round "
            f"({starts:.0f} starts since {since}; see watcher.log beside its config there)",
        )
    if at is None:
        if started is not None and now - started <= fresh:
            return WatcherState(True)  # started, its first round under way
        return WatcherState(False, problem=f"the watcher on {head} completed no round")
    return WatcherState(False, problem=f"the watcher on {head} last reported {now - at:.0f}s ago")


def describe(autostop: Autostop) -> str:
    """`idle 30 min -> stop, max 72 h`: the settings as plan and status show them."""
    parts = []
    if autostop.idle_minutes is not None:
        parts.append(f"idle {autostop.idle_minutes} min -> {autostop.action}")
    if autostop.max_hours is not None:
        parts.append(f"max {autostop.max_hours} h -> {autostop.action}")
    return ", ".join(parts) or "off"


def settings_in_force(state: ClusterState, spec: ClusterSpec) -> Autostop | None:
    """What `dlvm autostop` set since the last `up`, else the applied file's settings."""
    recorded = state.read_json(state.autostop_path)
    if isinstance(recorded, dict) and "settings" in recorded:
        value = recorded["settings"]
        return None if value is None else Autostop.model_validate(value)
    return spec.autostop


def forget_override(state: ClusterState) -> None:
    (state.autostop_path).unlink(missing_ok=True)


def change(
    cluster: Cluster,
    progress: Progress,
    *,
    idle: int | None = None,
    off: bool = False,
    action: str | None = None,
) -> Autostop | None:
    """`dlvm autostop`: rewrite the head's watcher config with new settings (kept until the
    next `up`, which applies the file's again); the settings now in force."""
    state = cluster.state
    with cluster.lock("autostop"):
        inventory = cluster.require_inventory()
        spec = cluster.require_applied().spec
        settings = changed_settings(
            settings_in_force(state, spec), idle=idle, off=off, action=action, spec=spec
        )
        provider = cluster.provider
        states = provider.node_states(inventory)
        if states.get(inventory.head.name) == NodeState.STOPPED:
            progress.note("the cluster is stopped: the watcher takes this when it starts")
        else:
            install(cluster.pool(), inventory, spec, provider, progress, settings=settings)
        state.write_json(
            state.autostop_path,
            {"settings": None if settings is None else settings.model_dump()},
        )
    return settings


def changed_settings(
    current: Autostop | None,
    *,
    idle: int | None,
    off: bool,
    action: str | None,
    spec: ClusterSpec | None = None,
) -> Autostop | None:
    """The settings `dlvm autostop` asks for, from those in force; with the applied `spec`,
    refused where the cluster file would refuse them (flex-start VMs, which cannot be
    stopped, told to stop)."""
    if off:
        if idle is not None:
            raise UsageError("give either --idle or --off", hint="--off turns autostop off")
        return None
    base = current or Autostop()
    values = base.model_dump()
    if idle is not None:
        values["idle_minutes"] = idle
    if action is not None:
        values["action"] = action
    settings = Autostop.model_validate(values)
    if spec is not None:
        _refuse_what_the_file_would(spec, settings)
    return settings


def _refuse_what_the_file_would(spec: ClusterSpec, settings: Autostop) -> None:
    """The kind's own rules on autostop, as a cluster file with these settings would meet
    them at load."""
    changed = spec.model_copy(update={"autostop": settings})
    for field, message in providers.spec_kinds().problems(changed):
        if field[:1] == ("autostop",):
            raise UsageError(
                f"cluster {spec.name!r} cannot take this autostop setting: {message}",
                hint="the settings in force are unchanged",
            )
