"""Shell text that starts, follows, probes and stops a job on a node.

A job runs detached in its own session (`setsid`), so it survives dlvm and the SSH session;
its output goes to jobs/<id>/log in the cluster's folder on the node (~/.dlvm/node-files/NAME)
and its exit status to .../exit. A job restarted after a failure appends to the same log, and
`offset` says where the current run's output begins (what `follow` shows). Stopping it does
not trust process groups alone (launchers start workers in new sessions): every process of a
job carries DLVM_JOB_ID in its environment, and all processes on the node with that value
(and in the node's network namespace, which on the local provider tells nodes apart) are
stopped, then counted again to prove none is left.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from dlvm_cluster.inventory import node_dir
from dlvm_cluster.remote.command import source_secrets
from dlvm_cluster.shell import env_exports, quote_path

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def job_dir(cluster: str, job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"bad job id {job_id!r}")
    return f"{node_dir(cluster)}/jobs/{job_id}"


def _dir_var(cluster: str, job_id: str) -> str:
    return f"d={quote_path(job_dir(cluster, job_id))}; "


def start(cluster: str, job_id: str, command: str, env: Mapping[str, str], workdir: str) -> str:
    """Start `command` (shell text) detached; prints `started PID`."""
    inner = (
        # The command runs in a subshell so that an `exit` or `exec` in it cannot skip
        # recording its status.
        f"{source_secrets(cluster)}{env_exports(env)}(cd {quote_path(workdir)} && {command}); "
        'code=$?; echo $code > "$d/exit.tmp" && mv "$d/exit.tmp" "$d/exit"'
    )
    return (
        f'{_dir_var(cluster, job_id)}mkdir -p "$d" && rm -f "$d/exit" || exit 1; export d; '
        # Appended to (O_APPEND), so that a line another writer adds (autostop's warning
        # before max_hours) lands at the end instead of being overwritten by the job, and a
        # relaunch after a recovery continues the log; `offset` is where this run begins.
        '{ [ -f "$d/log" ] && wc -c < "$d/log" || echo 0; } > "$d/offset"; '
        f'setsid sh -c {shlex.quote(inner)} >> "$d/log" 2>&1 < /dev/null & '
        'echo $! > "$d/pid"; echo started $!'
    )


def follow(cluster: str, job_id: str, *, from_now: bool = False) -> str:
    """Print the current run's log (with `from_now`, what it adds from now on) as it grows
    until the job ends; exit with the job's status (255 when it left none: it was killed)."""
    offset = 'wc -c < "$d/log"' if from_now else 'cat "$d/offset"'
    return (
        f"{_dir_var(cluster, job_id)}"
        f'[ -f "$d/pid" ] || {{ echo "no job {job_id} here" >&2; exit 255; }}; '
        f"o=$({offset} 2>/dev/null); " + "o=$(( ${o:-0} + 1 )); "
        # -s 0.1: how often tail looks whether the job still runs (1 s by default, which
        # was up to a second added to every job's end).
        'tail -c +"$o" -F -s 0.1 --pid="$(cat "$d/pid")" "$d/log" 2>/dev/null; '
        'exit "$(cat "$d/exit" 2>/dev/null || echo 255)"'
    )


def show_log(cluster: str, job_id: str) -> str:
    return (
        f'{_dir_var(cluster, job_id)}cat "$d/log" 2>/dev/null || echo "(no log for {job_id})" >&2'
    )


def probe(cluster: str, job_ids: Sequence[str]) -> str:
    """One line per job: `ID running`, `ID exit N`, or `ID gone`."""
    checks = []
    for job_id in job_ids:
        checks.append(
            f"{_dir_var(cluster, job_id)}"
            f'if [ -f "$d/exit" ]; then echo "{job_id} exit $(cat "$d/exit")"; '
            f'elif [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; '
            f'then echo "{job_id} running"; else echo "{job_id} gone"; fi'
        )
    return "; ".join(checks) or "true"


def _job_pids(job_id: str) -> str:
    """Shell text defining `pids`: the job's processes on this node (not this shell)."""
    needle = shlex.quote(f"DLVM_JOB_ID={job_id}")
    return (
        "me=$(readlink /proc/self/ns/net); "
        "pids() { for e in $(grep -lzx "
        f"{needle}"
        " /proc/[0-9]*/environ 2>/dev/null); do p=${e#/proc/}; p=${p%/environ}; "
        '[ "$p" = "$$" ] && continue; '
        '[ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && echo $p; done; }; '
    )


def activity(cluster: str, job_id: str) -> str:
    """The command names of the job's processes on this node, one per line (what a quiet
    job is busy with: `cc1plus` and `ninja` while DeepSpeed builds its ops). Its text names
    the job's folder, as `follow` does, so that autostop's watcher takes it for what it is:
    a look at that job, no activity of its own."""
    return (
        _dir_var(cluster, job_id)
        + _job_pids(job_id)
        + "for p in $(pids); do cat /proc/$p/comm 2>/dev/null; done"
    )


def stop(cluster: str, job_id: str, grace: float = 5.0) -> str:
    """SIGTERM every process of the job, SIGKILL what is left after `grace` seconds, then
    print `left N` (N processes of the job still alive: 0 unless something is wrong)."""
    return (
        f"{_dir_var(cluster, job_id)}" + _job_pids(job_id) + 'lead=$(cat "$d/pid" 2>/dev/null); '
        '[ -n "$lead" ] && kill -TERM -- -"$lead" 2>/dev/null; '
        "kill -TERM $(pids) 2>/dev/null; "
        f'i=0; while [ $i -lt {int(grace * 10)} ] && [ -n "$(pids)" ]; do '
        "sleep 0.1; i=$((i+1)); done; "
        '[ -n "$lead" ] && kill -KILL -- -"$lead" 2>/dev/null; '
        "kill -KILL $(pids) 2>/dev/null; sleep 0.2; "
        "echo left $(pids | wc -l)"
    )
