"""Where perfscale keeps what it computed for this user: $XDG_CACHE_HOME/perfscale, else ~/.cache/perfscale.

The results store, exported ONNX models and the CPU calibration all live below it."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "perfscale"
