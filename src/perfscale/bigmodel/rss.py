"""Resident memory of this process while a block runs: convert's writing and load_worker's
from_pretrained both report it."""

from __future__ import annotations

import resource
import threading


def max_rss_bytes() -> int:
    """getrusage's ru_maxrss: the process's peak RSS so far (an upper bound of any block's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class PeakRss:
    """RSS when the block starts (`start`) and its peak, sampled every `interval` seconds on a thread
    (psutil) and once more at the end."""

    def __init__(self, interval: float) -> None:
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
