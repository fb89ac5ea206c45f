"""Operation times measured on this machine: the calibration store that CPU time estimates read.

A Calibration maps an operation signature (e.g. `linear_fwd:256,688:fp32`, see cpu_step.py) to the
seconds it took at one or more sizes of its scaled dimension (tokens, batch, or parameters). Lookups
between measured sizes interpolate linearly; outside them, time scales in proportion to the size
from the nearest measured point (an operation's time is close to linear in its token count once
it is past a few hundred tokens). Nothing here imports torch: `perfscale.measure.cpu_probe` fills
a Calibration, estimate() only reads one.

Stored as JSON under $XDG_CACHE_HOME/perfscale/calibration/ (else ~/.cache/...), one file per
machine fingerprint (CPU model, threads, torch version), so a later plan on the same machine reuses
what was measured and a different machine or thread count never does.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscale.user_cache import user_cache_dir

SCHEMA = 1


def calibration_dir() -> Path:
    return user_cache_dir() / "calibration"


@dataclass
class Calibration:
    """Measured operation times on one machine (fingerprint) at one thread count."""

    fingerprint: dict[str, Any]
    times: dict[str, dict[int, float]] = field(default_factory=dict)  # signature -> {size: seconds}
    bandwidth: float | None = None  # elementwise memory traffic, bytes/s (read + write)
    _sorted: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict, repr=False, compare=False)

    def add(self, signature: str, size: int, seconds: float) -> None:
        self.times.setdefault(signature, {})[int(size)] = float(seconds)
        self._sorted.pop(signature, None)

    def has(self, signature: str, size: int) -> bool:
        return int(size) in self.times.get(signature, {})

    def seconds(self, signature: str, size: float) -> float | None:
        """Time of `signature` at `size`, interpolated; None when the signature was never measured."""
        table = self._sorted.get(signature)
        if table is None:
            points = self.times.get(signature)
            if not points:
                return None
            sizes = sorted(points)
            table = self._sorted[signature] = (sizes, [points[s] for s in sizes])
        sizes, secs = table
        i = bisect.bisect_left(sizes, size)
        if i < len(sizes) and sizes[i] == size:
            return secs[i]
        if i == 0:
            return secs[0] * size / sizes[0]
        if i == len(sizes):
            return secs[-1] * size / sizes[-1]
        lo, hi = sizes[i - 1], sizes[i]
        return secs[i - 1] + (secs[i] - secs[i - 1]) * (size - lo) / (hi - lo)

    @property
    def key(self) -> str:
        text = json.dumps(self.fingerprint, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "fingerprint": self.fingerprint, "bandwidth": self.bandwidth,
                "times": {sig: {str(s): t for s, t in sorted(pts.items())} for sig, pts in sorted(self.times.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        times = {sig: {int(s): float(t) for s, t in pts.items()} for sig, pts in data.get("times", {}).items()}
        return cls(fingerprint=dict(data["fingerprint"]), times=times, bandwidth=data.get("bandwidth"))

    def path(self, folder: Path | None = None) -> Path:
        return (folder or calibration_dir()) / f"{self.key}.json"

    def save(self, folder: Path | None = None) -> Path:
        """Write atomically (a reader never sees half a file)."""
        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(path)
        return path


def load_calibration(fingerprint: dict[str, Any], folder: Path | None = None) -> Calibration:
    """The stored calibration for this fingerprint, or an empty one (a damaged file counts as empty)."""
    empty = Calibration(fingerprint=dict(fingerprint))
    path = empty.path(folder)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return empty
    if data.get("schema") != SCHEMA or data.get("fingerprint") != empty.fingerprint:
        return empty
    return Calibration.from_dict(data)
