"""A quiet terminal: what third-party code prints while perfscale works is captured, not shown.

Libraries perfscale drives write to the process's stderr on their own: transformers' weight-loading
progress bars, FutureWarnings, torch.onnx's exporter chatter ("torchvision is not installed ..."),
onnxruntime.quantization's advice, C++ logging. Catching each at its source misses the next one, so
while a verb works, file descriptor 2 itself points at a temporary file (child processes inherit it
too), and perfscale's own progress goes to a duplicate of the real stderr (`Capture.terminal`).
Afterwards the captured lines are summarised in one note on the result; `--verbose` shows them as
they come instead. Errors are printed after the capture ends, so they always reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

# A progress bar's redraws: "Loading weights:  40%|####      | 41/103 [00:00<00:00, 5802.50it/s]".
_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
_WARNING = re.compile(r"\b(\w*Warning)\b:")


@dataclass
class Capture:
    """Where perfscale's own lines go (`terminal`) and, after the block, what third-party code printed."""

    terminal: IO[str]
    verbose: bool = False
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """One note for the result: how many lines, of which kinds, and the first distinct ones."""
        if not self.lines:
            return None
        kinds: Counter[str] = Counter()
        shown: list[str] = []
        for line in self.lines:
            if _BAR.search(line):
                kinds["progress-bar lines"] += 1
                continue
            match = _WARNING.search(line)
            kinds[match.group(1) if match else "other lines"] += 1
            text = line.strip()[:100]
            if text not in shown and len(shown) < 3 and not text.startswith(("return ", "warnings.warn", "torch.onnx.export(")):
                shown.append(text)
        parts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        examples = "; ".join(repr(t) for t in shown)
        return (f"third-party output captured and not shown: {len(self.lines)} lines ({parts})"
                + (f", e.g. {examples}" if examples else "") + "; --verbose shows it as it comes")


def split_lines(data: bytes) -> list[str]:
    """Captured bytes as lines; a progress bar's carriage-return redraws count as one line each."""
    text = data.decode("utf-8", errors="replace")
    return [part for line in text.splitlines() for part in line.split("\r") if part.strip()]


@contextlib.contextmanager
def captured_stderr(verbose: bool = False) -> Iterator[Capture]:
    """Capture fd 2 (and sys.stderr) for the block; `verbose` leaves everything as it is."""
    if verbose:
        yield Capture(terminal=sys.stderr, verbose=True)
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (an embedding host): nothing to capture
        yield Capture(terminal=sys.stderr)
        return
    sink = tempfile.TemporaryFile()
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                         errors="replace")
    capture = Capture(terminal=terminal)
    os.dup2(sink.fileno(), 2)
    failed = False
    try:
        yield capture
    except BaseException as exc:
        from perfscale.errors import PerfscaleError

        failed = not isinstance(exc, (PerfscaleError, KeyboardInterrupt))  # a user's mistake needs no library chatter
        raise
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        with contextlib.suppress(OSError, ValueError):
            terminal.close()
        sink.seek(0)
        capture.lines = split_lines(sink.read())
        sink.close()
        if failed and capture.lines:  # an internal error: what the libraries said may explain it
            sys.stderr.write("third-party output before the error (last 30 lines):\n" + "\n".join(capture.lines[-30:]) + "\n")


__all__ = ["Capture", "captured_stderr", "split_lines"]
