"""This process's memory as Linux reports it (/proc/self): RSS, its high-water mark, and resetting that mark
so a peak covers only the part that follows. Shared by the measurement worker and the load scenario."""

from __future__ import annotations

from pathlib import Path


def status_bytes(field: str) -> int | None:
    """A /proc/self/status size field (VmRSS, VmHWM, ...) in bytes; None where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM := VmRSS) so that the peak covers what follows only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


__all__ = ["reset_peak_rss", "status_bytes"]
