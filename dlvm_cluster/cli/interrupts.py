"""Ctrl-C and SIGTERM for every dlvm command: the first stops cleanly (KeyboardInterrupt,
which each command turns into stopping its remote work), the second leaves at once."""

from __future__ import annotations

import os
import signal
from types import FrameType


def install() -> None:
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count > 1:
            os._exit(130)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
