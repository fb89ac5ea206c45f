"""Inline bar charts for terminal tables: a share drawn in block characters, so a breakdown's proportions
show without opening a file (eighth-blocks: 8 steps per character cell)."""

from __future__ import annotations

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float | None, width: int = 20) -> str:
    """`fraction` (0..1, clipped) as a bar `width` cells wide: bar(0.5, 4) == '██  '."""
    if fraction is None or fraction != fraction:  # None or NaN: no bar
        return " " * width
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    part = int(round((cells - full) * 8))
    if part == 8:
        full, part = full + 1, 0
    text = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return text.ljust(width)


__all__ = ["bar"]
