"""The real `dlvm` command line in a subprocess, for unit tests that check what a user sees
(exit code, stderr) without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_dlvm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DLVM_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
