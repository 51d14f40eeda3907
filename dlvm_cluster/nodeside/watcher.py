"""The autostop watcher: a standalone program (Python standard library only) that `up` copies to
every node and runs on the head, so that an idle cluster stops itself with the user's machine
switched off. It imports nothing of dlvm: the nodes have only a python3.

    python3 watcher.py run CONFIG        decide, every `interval` seconds (on the head)
    python3 watcher.py supervise CONFIG  run `run` again whenever it exits (no systemd)
    python3 watcher.py probe NODE_DIR HANG_SECONDS   this node's activity, as one JSON line

The head asks every other node (`probe`, over the cluster's internal SSH) and itself. A node
is busy while a job runs there whose log grew in the last HANG_SECONDS (a job that prints
nothing that long is hung, and keeps nothing up), or while an SSH session runs a command on
it (`dlvm exec`, `dlvm ssh`, `dlvm sync`; an idle connection, such as the agent's warm ones,
runs none); a node that does not answer, or answers anything but what `probe` prints (a
JSON object of three lists of short strings), counts as busy (it may be too loaded to
answer; a broken or hostile one must not switch the cost guard off). The cluster is idle
once no node was busy for `idle_seconds`. After `max_seconds` since the nodes started, the
action is applied however busy the cluster is, with a warning in every running job's log
`warn_seconds` before: that is decided first in every round, whatever the peers answer, and
a round that fails is logged and counts as busy, never ends the watcher.

The action: every other node, then the head, runs `self_stop` (the provider's shell text
that powers its own machine off, or deletes it), with DLVM_STOP_REASON set to `autostop`
or `max_hours` and DLVM_STOP_ACTION to the action.

CONFIG (JSON, rewritten by `dlvm autostop`; read again on every round): idle_seconds,
max_seconds and hang_seconds (null: no limit), started_at (epoch seconds), action, interval,
warn_seconds, node_dir, peers (node names the head reaches by SSH), self_stop; one that
cannot be read keeps the last that could. The watcher writes `heartbeat.json` beside it
(`dlvm status` reads it): `at` is when the last round completed, `starts` how many times
the watcher started since then (a watcher that dies before completing a round, again and
again, shows as such), and `watcher.log`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SSH_SESSION = {"sshd", "sshd-session"}  # the parent of a command run over SSH
PROBE_TIMEOUT = 20.0
MAX_ANSWER = 256 * 1024  # the most of a peer's output read (the rest is never buffered)
MAX_ITEMS = 1000  # jobs, hung jobs or sessions in one probe answer
MAX_ITEM = 300  # characters of one
REPORT_KEYS = ("jobs", "hung", "sessions")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _parent_and_name(pid: str) -> tuple[str, str]:
    stat = _read(f"/proc/{pid}/stat")
    if ")" not in stat:
        return "", ""
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return (fields[1] if len(fields) > 1 else ""), name


def _network_namespace(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _ancestors(pid: str) -> set[str]:
    seen = set()
    while pid and pid not in ("0", "1") and pid not in seen:
        seen.add(pid)
        pid = _parent_and_name(pid)[0]
    return seen


def open_sessions(ignore: tuple[str, ...] = ()) -> list[str]:
    """The commands SSH sessions run on this node, other than the one asking: processes of
    this node's network namespace (local nodes share the host's PID namespace) whose parent
    is an sshd session process; a command whose line holds one of `ignore` is left out."""
    mine = _network_namespace("self")
    own = _ancestors(str(os.getpid()))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry in own:
            continue
        parent, name = _parent_and_name(entry)
        if name in SSH_SESSION or not parent:
            continue
        if _parent_and_name(parent)[1] not in SSH_SESSION:
            continue
        if _network_namespace(entry) != mine:
            continue
        command = _read(f"/proc/{entry}/cmdline").replace("\0", " ")
        if any(text in command for text in ignore):
            continue
        found.append(f"{name}[{entry}]")
    return found


def _alive(pid: str) -> bool:
    return pid.isdigit() and os.path.exists(f"/proc/{pid}")


def running_jobs(
    node_dir: str, hang_seconds: float | None, now: float
) -> tuple[list[str], list[str]]:
    """(jobs making progress, hung jobs) of this node: a job runs while its leader lives and it
    left no exit status; it makes progress while its log grew within hang_seconds."""
    jobs_dir = Path(os.path.expanduser(node_dir)) / "jobs"
    progressing: list[str] = []
    hung: list[str] = []
    try:
        entries = sorted(jobs_dir.iterdir())
    except OSError:
        return [], []
    for job in entries:
        if (job / "exit").exists() or not _alive(_read(str(job / "pid")).strip()):
            continue
        try:
            quiet = now - (job / "log").stat().st_mtime
        except OSError:
            quiet = 0.0
        if hang_seconds is not None and quiet >= hang_seconds:
            hung.append(job.name)
        else:
            progressing.append(job.name)
    return progressing, hung


def following(node_dir: str, job: str) -> str:
    """What the command line of a session that follows `job`'s log holds (`dlvm launch` in
    the foreground, `dlvm logs --follow`): its job folder."""
    return f"{node_dir.removeprefix('~/')}/jobs/{job}"


def probe(node_dir: str, hang_seconds: float | None) -> dict[str, Any]:
    """This node's activity. A session that only follows a hung job's log keeps nothing up:
    the job makes no progress however long someone watches it."""
    jobs, hung = running_jobs(node_dir, hang_seconds, time.time())
    ignore = tuple(following(node_dir, job) for job in hung)
    return {"jobs": jobs, "hung": hung, "sessions": open_sessions(ignore)}


def warn_jobs(node_dir: str, text: str) -> None:
    """Append `text` to the log of every job running on this node."""
    jobs, hung = running_jobs(node_dir, None, time.time())
    for job in jobs + hung:
        path = Path(os.path.expanduser(node_dir)) / "jobs" / job / "log"
        try:
            with open(path, "a", encoding="utf-8") as log:
                log.write(text + "\n")
        except OSError:
            continue


def _ssh(peer: str, command: str, timeout: float = PROBE_TIMEOUT) -> tuple[int, str]:
    """Run `command` on a peer over the cluster's internal SSH (the mesh's ~/.ssh/config):
    its exit code and the first MAX_ANSWER bytes of its output (more: 255, no answer)."""
    try:
        process = subprocess.Popen(
            ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", peer, command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        return 255, str(exc)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        out = process.stdout.read(MAX_ANSWER + 1)
        if len(out) > MAX_ANSWER:
            process.kill()
        code = process.wait()
    finally:
        timer.cancel()
        if process.stdout:
            process.stdout.close()
    if len(out) > MAX_ANSWER or code < 0:  # too much, or killed at the timeout
        return 255, ""
    return code, out.decode("utf-8", errors="replace")


def peer_report(out: str) -> dict[str, list[str]] | None:
    """A peer's probe answer (its output's last line) if it is exactly what `probe` prints:
    an object whose jobs, hung and sessions are lists of short strings. Anything else,
    including JSON nested too deep to parse, is None: no answer."""
    lines = out.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except Exception:  # IndexError, ValueError, RecursionError: whatever came
        return None
    if not isinstance(report, dict):
        return None
    checked = {}
    for key in REPORT_KEYS:
        items = report.get(key)
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            return None
        if not all(isinstance(item, str) and len(item) <= MAX_ITEM for item in items):
            return None
        checked[key] = items
    return checked


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def activity(config: dict[str, Any]) -> list[str]:
    """What keeps the cluster busy right now, one phrase per thing (empty: idle)."""
    node_dir, hang = config["node_dir"], config.get("hang_seconds")
    found = probe(node_dir, hang)
    reports = {"head": found}
    me = _quote(os.path.abspath(__file__))
    busy = []
    for peer in config.get("peers", []):
        code, out = _ssh(peer, f"python3 {me} probe {_quote(node_dir)} {_quote(str(hang))}")
        report = peer_report(out) if code == 0 else None
        if report is not None:
            reports[peer] = report
        else:  # unknown is not idle: a node too loaded to answer may be training
            busy.append(f"no answer from {peer}")
    for node, report in reports.items():
        busy += [f"job {job} on {node}" for job in report["jobs"]]
        busy += [f"session {what} on {node}" for what in report["sessions"]]
    return busy


def apply_action(config: dict[str, Any], reason: str, log: Any) -> None:
    """Every other node runs self_stop, then the head (which ends this process too)."""
    command = config["self_stop"]
    action = config.get("action", "stop")
    env = f"DLVM_STOP_REASON={reason} DLVM_STOP_ACTION={action} "
    for peer in config.get("peers", []):
        code, _ = _ssh(peer, f"{env}sh -c {_quote(command)}", timeout=30)
        log(f"{peer}: {action} ({reason}) -> exit {code}")
    log(f"head: {action} ({reason})")
    subprocess.run(
        ["sh", "-c", command],
        env={**os.environ, "DLVM_STOP_REASON": reason, "DLVM_STOP_ACTION": action},
        check=False,
    )


def boot_time() -> float:
    """When this machine's kernel booted (/proc/stat btime; 0 when unknown). A local node
    shares the host's kernel, so only a VM's comes later than its config's started_at."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def up_since(config: dict[str, Any], now: float) -> float:
    """Since when max_hours counts: the nodes' start as `up`/`start` wrote it, or this
    machine's boot if later. A VM started outside dlvm (or before `start` rewrites the
    config: systemd runs the watcher at boot) would otherwise still count its previous run,
    and stop again at once, its max_hours spent."""
    started = _number(config.get("started_at"))
    return max(now if started is None else started, boot_time())


def _number(value: Any, default: float | None = None) -> float | None:
    """A finite number from the config, else `default` (the config is dlvm's, but a bad
    one must not end the watcher)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value) if math.isfinite(value) else default


def _read_config(path: str, last: dict[str, Any]) -> dict[str, Any]:
    """The config as it is now; the last one that could be read if it cannot."""
    try:
        config = json.loads(_read(path)[:MAX_ANSWER])
    except Exception:
        return last
    return config if isinstance(config, dict) else last


def _read_beat(path: str) -> dict[str, Any]:
    try:
        beat = json.loads(_read(path)[:MAX_ANSWER])
    except Exception:
        return {}
    return beat if isinstance(beat, dict) else {}


def run(config_path: str) -> None:
    folder = os.path.dirname(os.path.abspath(config_path))
    heartbeat = os.path.join(folder, "heartbeat.json")

    def log(text: str) -> None:
        with open(os.path.join(folder, "watcher.log"), "a", encoding="utf-8") as handle:
            handle.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")

    # Carried from the last heartbeat: when a round last completed, and how many starts
    # came since (this one included).
    previous = _read_beat(heartbeat)
    completed = _number(previous.get("at"))
    starts = int(_number(previous.get("starts"), 0) or 0) + 1
    started = time.time()

    def beat(config: dict[str, Any], busy: list[str], idle_for: float) -> None:
        data = {
            "at": completed,
            "started": started,
            "starts": starts,
            "pid": os.getpid(),
            "idle_for": round(idle_for, 1),
            "busy": busy,
            "idle_seconds": _number(config.get("idle_seconds")),
            "max_seconds": _number(config.get("max_seconds")),
            "action": str(config.get("action", "stop")),
            "interval": _number(config.get("interval"), 30.0),
        }
        with open(heartbeat + ".new", "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(heartbeat + ".new", heartbeat)

    last_busy = time.time()
    warned = False
    log(f"watching (pid {os.getpid()})")
    config = _read_config(config_path, {})
    beat(config, [], 0.0)  # started, no round completed yet
    while True:
        config = _read_config(config_path, config)
        now = time.time()
        # max_hours first, whatever the peers answer.
        try:
            warned = _max_hours(config, now, warned, log)
        except Exception as exc:
            log(f"max_hours round failed: {type(exc).__name__}: {exc}")
        idle = _number(config.get("idle_seconds"))
        try:
            busy = activity(config) if idle is not None else []
        except Exception as exc:  # a round that fails keeps the cluster up, never the watcher down
            log(f"round failed: {type(exc).__name__}: {exc}")
            busy = [f"a round that failed ({type(exc).__name__})"]
        if busy:
            last_busy = now
        completed, starts = time.time(), 0
        try:
            beat(config, busy, now - last_busy)
        except OSError as exc:
            log(f"cannot write the heartbeat: {exc}")
        if idle is not None and now - last_busy >= idle:
            log(f"idle for {now - last_busy:.0f}s")
            try:
                apply_action(config, "autostop", log)
            except Exception as exc:
                log(f"autostop failed: {type(exc).__name__}: {exc}")
        interval = _number(config.get("interval"))
        time.sleep(min(max(30.0 if interval is None else interval, 1.0), 3600.0))


def _max_hours(config: dict[str, Any], now: float, warned: bool, log: Any) -> bool:
    """Warn running jobs `warn_seconds` before max_hours, and apply the action once it is
    reached; whether the warning was given."""
    limit = _number(config.get("max_seconds"))
    if limit is None:
        return warned
    up_for = now - up_since(config, now)
    warn = _number(config.get("warn_seconds"))
    warn_at = limit - (600.0 if warn is None else warn)
    if not warned and up_for >= warn_at:
        warned = True
        minutes = max(0, round((limit - up_for) / 60))
        text = (
            f"dlvm autostop: max_hours reached in about {minutes} minute(s): the "
            f"cluster will {config.get('action', 'stop')} however busy it is"
        )
        warn_jobs(config["node_dir"], text)
        for peer in config.get("peers", []):
            me = _quote(os.path.abspath(__file__))
            _ssh(peer, f"python3 {me} warn {_quote(config['node_dir'])} {_quote(text)}")
        log(text)
    if up_for >= limit:
        log(f"max_hours: up for {up_for:.0f}s")
        apply_action(config, "max_hours", log)
    return warned


def supervise(config_path: str) -> None:
    """Keep `run` going: started again 5 seconds after it ends, whatever the reason."""
    while True:
        subprocess.run([sys.executable, os.path.abspath(__file__), "run", config_path], check=False)
        time.sleep(5)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "run":
        run(argv[1])
    elif len(argv) >= 2 and argv[0] == "supervise":
        supervise(argv[1])
    elif len(argv) >= 3 and argv[0] == "probe":
        hang = None if argv[2] in ("None", "null", "") else float(argv[2])
        print(json.dumps(probe(argv[1], hang)))
    elif len(argv) >= 3 and argv[0] == "warn":
        warn_jobs(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
