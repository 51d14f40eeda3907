"""Loaded by every Python process of a job as `sitecustomize` (dlvm puts its folder first on
the job's PYTHONPATH), and run by the launch command as a program once the launcher exits 0.

In a rank (a process its launcher numbered: RANK, OMPI_COMM_WORLD_RANK or HOROVOD_RANK set):
- stdout and stderr become line buffered (not unbuffered: a print then reaches the log as one
  write, so launchers that merge ranks' output, like mpirun, never cut a line in two);
- it notes the size of the world the rank joined, as its framework makes it visible:
  torch.distributed's init_process_group (torchrun, Accelerate, DeepSpeed), hvd.init
  (Horovod), mpi4py's MPI; a rank that never joined any notes that it ran alone. The notes
  go to DLVM_RANKS, one file per process.
Then the next `sitecustomize` on the path (the user's own, or the Python's) runs as usual.

As a program (`python3 rank_hook.py`), it reads the notes of this node and fails (exit 3,
saying which ranks) when a rank saw another world size than DLVM_RANK_CHECK's, or, with
its policy `require`, ran alone: a job that "succeeded" without being distributed.

Standard library only; nothing here may break the user's program, so every step is guarded.
"""

from __future__ import annotations

import contextlib
import os
import sys

NOTES = "DLVM_RANKS"
POLICY = "DLVM_RANK_CHECK"
"""`POLICY:SIZE`: SIZE the world every rank must have joined (0: any, as in an elastic job);
POLICY `require`: a rank that ran alone fails the job, `warn`: says so only."""
RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMI_RANK")
ALONE = "alone"
FAILED = 3

_joined: list[int] = []


def rank() -> str | None:
    for name in RANK_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return value
    return None


def _note(text: str) -> None:
    folder, who = os.environ.get(NOTES, ""), rank()
    if not folder or who is None:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{who}.{os.getpid()}")
        with open(path + ".tmp", "w") as stream:
            stream.write(text + "\n")
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def _joined_world(size: object) -> None:
    if isinstance(size, int) and size > 0:
        _joined.append(size)
        _note(f"joined {size}")


def _at_exit() -> None:
    if not _joined:
        _note(ALONE)


def _note_world_after(module: object, init: str, size: str) -> None:
    """Wrap `module.<init>` so that, once it returned, `module.<size>()` is noted."""
    original = getattr(module, init, None)
    if original is None:
        return
    import functools

    @functools.wraps(original)
    def wrapped(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        with contextlib.suppress(Exception):
            _joined_world(getattr(module, size)())
        return result

    setattr(module, init, wrapped)


def _after_torch_distributed(module: object) -> None:
    _note_world_after(module, "init_process_group", "get_world_size")


def _after_horovod_torch(module: object) -> None:
    _note_world_after(module, "init", "size")


def _after_mpi(module: object) -> None:
    if module.Is_initialized():  # type: ignore[attr-defined]
        _joined_world(module.COMM_WORLD.Get_size())  # type: ignore[attr-defined]


AFTER_IMPORT = {
    "torch.distributed.distributed_c10d": _after_torch_distributed,
    "horovod.torch": _after_horovod_torch,
    "mpi4py.MPI": _after_mpi,
}


class _Watch:
    """A meta path finder that lets the real finders find the modules of AFTER_IMPORT and
    runs their patch once the module has executed (before any importer sees it)."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        patch = AFTER_IMPORT.get(name)
        if patch is None:
            return None
        others: list[object] = [finder for finder in sys.meta_path if finder is not self]  # type: ignore[comparison-overlap]
        for finder in others:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = getattr(spec, "loader", None)
        execute = getattr(loader, "exec_module", None)
        if execute is None:
            return spec

        def exec_module(module: object) -> None:
            execute(module)
            with contextlib.suppress(Exception):
                patch(module)

        with contextlib.suppress(Exception):
            loader.exec_module = exec_module  # type: ignore[union-attr]
        return spec


def _line_buffered() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]


def _chain() -> None:
    """Run the next `sitecustomize` on the path, as Python would have without this one."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _install() -> None:
    if rank() is not None:
        try:
            import atexit

            _line_buffered()
            sys.meta_path.insert(0, _Watch())  # type: ignore[arg-type]
            atexit.register(_at_exit)
        except Exception:
            pass
    _chain()


def problems(notes: dict[str, list[str]], expected: int, policy: str) -> tuple[list[str], bool]:
    """What the notes of one node's ranks say, as lines to show, and whether the job failed.
    `notes` maps a rank to the notes of its processes (a rank's own child interpreters note
    too: the rank counts as joined when any of them joined)."""
    lines: list[str] = []
    failed = False
    alone = []
    for who in sorted(notes, key=int):
        sizes = {int(n.split()[1]) for n in notes[who] if n.startswith("joined ")}
        wrong = sorted(size for size in sizes if expected and size != expected)
        if wrong:
            failed = True
            lines.append(
                f"rank {who} joined a world of {wrong[0]} process(es); this job has {expected}"
            )
        elif not sizes:
            alone.append(who)
    if alone:
        if policy == "require":
            failed = True
            lines.append(
                f"rank(s) {', '.join(alone)} never joined the job's process group: each ran "
                "alone, so nothing was distributed (on nodes without GPUs, a script must use "
                "the CPU, e.g. gloo)"
            )
        elif policy == "warn":
            lines.append(
                f"note: rank(s) {', '.join(alone)} never joined a process group "
                "(torch.distributed, Horovod or MPI): each ran alone"
            )
    return lines, failed


def read_notes(folder: str) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return notes
    for name in names:
        who, _, pid = name.partition(".")
        if not who.isdigit() or not pid.isdigit():
            continue
        try:
            with open(os.path.join(folder, name)) as stream:
                text = stream.read(200).strip()
        except OSError:
            continue
        notes.setdefault(who, []).append(text)
    return notes


def main() -> int:
    policy, _, expected = os.environ.get(POLICY, "").partition(":")
    lines, failed = problems(
        read_notes(os.environ.get(NOTES, "")),
        int(expected) if expected.isdigit() else 0,
        policy,
    )
    for line in lines:
        print(f"dlvm: {line}", flush=True)
    return FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
else:
    _install()
