"""What a job's NCCL will use on an A3 node, tried at boot without a job (standard library
only: the GPU-network boot script runs it with `python3 -S -I -c`, where dlvm is not
installed). It lives beside that script, not in nodeside/, because only this provider's
node script ships it.

    nccl_net_probe.py [--plugin PATH [--net NAME]] [--sockets DIR [--expect NAMES]]

--plugin: the NCCL net plugin loads as NCCL loads it (dlopen, every library it needs
resolved now) and exports an ncclNetPlugin_vN table; with --net, one of those tables is named
NAME, the transport NCCL_NET asks for (NCCL refuses to start when none is).
--sockets: the receive-data-path manager answers: DIR holds Unix sockets and each accepts a
connection (the plugin reaches RxDM through them); with --expect, DIR holds every one of
NAMES (space-separated), which RxDM opens one after another as it sets up.

Prints one line saying what was found; on a failure, one line saying what failed, exit 1.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import stat
import sys

# The plugin API versions NCCL looks for, newest first.
PLUGIN_VERSIONS = tuple(range(10, 4, -1))
CONNECT_TIMEOUT_S = 2.0


class ProbeFailed(Exception):
    """What a job would meet: the message says what failed."""


def plugin_names(path: str) -> dict[int, str]:
    """API version -> transport name of each ncclNetPlugin_vN table the plugin exports (the
    name is the table's first field, a C string)."""
    try:
        library = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as error:
        raise ProbeFailed(f"the NCCL net plugin does not load: {error}") from None
    names: dict[int, str] = {}
    for version in PLUGIN_VERSIONS:
        try:
            name = ctypes.c_char_p.in_dll(library, f"ncclNetPlugin_v{version}").value
        except ValueError:
            continue
        names[version] = (name or b"").decode("utf-8", "replace")
    if not names:
        raise ProbeFailed(f"{path} exports no ncclNetPlugin_v* table: NCCL would not use it")
    return names


def answering_sockets(folder: str, expected: tuple[str, ...] = ()) -> int:
    """How many Unix sockets in `folder` there are; each must accept a connection, and every
    name in `expected` must be one of them."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as error:
        raise ProbeFailed(f"cannot read {folder}: {error.strerror}") from None
    found: set[str] = set()
    for entry in entries:
        path = os.path.join(folder, entry)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(CONNECT_TIMEOUT_S)
            try:
                client.connect(path)
            except OSError as error:
                raise ProbeFailed(f"{path} does not answer: {error}") from None
        found.add(entry)
    if not found:
        raise ProbeFailed(f"no socket of the receive-data-path manager in {folder}")
    missing = [name for name in expected if name not in found]
    if missing:
        raise ProbeFailed(
            f"{len(found)} of the receive-data-path manager's sockets answer in {folder}; "
            f"{len(missing)} not there yet: {' '.join(missing)}"
        )
    return len(found)


def probe(
    plugin: str | None, net: str | None, sockets: str | None, expected: tuple[str, ...] = ()
) -> str:
    """What a job's NCCL would meet, checked without a job: the plugin at `plugin` (if given)
    loads as NCCL loads it and offers the transport `net` names; the receive-data-path
    manager's sockets in the folder `sockets` (if given) all answer, `expected` among them.
    Returns one line of what was found; raises ProbeFailed saying what a job would fail on."""
    found = []
    if plugin is not None:
        names = plugin_names(plugin)
        # NCCL compares NCCL_NET with each table's name ignoring case (strcasecmp).
        if net and net.casefold() not in {name.casefold() for name in names.values()}:
            offered = ", ".join(f"{name} (v{version})" for version, name in names.items())
            raise ProbeFailed(f"NCCL_NET is {net}, but the plugin offers {offered}")
        version, name = next(iter(names.items()))
        found.append(f"plugin {name} (v{version}) loads")
    if sockets is not None:
        found.append(f"{answering_sockets(sockets, expected)} RxDM socket(s) answer")
    return "; ".join(found) or "nothing asked"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nccl_net_probe")
    parser.add_argument("--plugin")
    parser.add_argument("--net")
    parser.add_argument("--sockets")
    parser.add_argument("--expect", default="")
    args = parser.parse_args(argv)
    try:
        print(probe(args.plugin, args.net, args.sockets, tuple(args.expect.split())))
    except ProbeFailed as failed:
        print(failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
