"""What a compiler compiled, per input shape, and where a step synchronises with the host.

Two counters, one per engine, with the same unit: a *compilation* is one graph handed to the compiler.
- torch.compile (any device): dynamo's own counters (`torch._dynamo.utils.counters["stats"]["unique_graphs"]`:
  each recompile and each piece of a graph break is one graph), its graph-break reasons
  (`counters["graph_break"]`), and the guard failures behind each recompile, read from torch's
  `recompiles` log artifact (what `TORCH_LOGS=recompiles` prints), captured here instead of printed.
- torch_xla: `torch_xla.debug.metrics` (CompileTime's sample count: one per XLA graph compiled;
  TransferFromDeviceTime's count: device-to-host copies; `aten::*` counters: ops XLA did not lower and
  ran on the CPU instead). That engine lives in debug/xla.py; this module needs no torch_xla.

`SyncProbe` finds host synchronisations without a device: a TorchFunctionMode that sees every
`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()/int()/float()` of a tensor and every tensor printed
or formatted, and names the line of the caller outside torch. On an accelerator (CUDA, XLA) each one
stalls the host until the device has finished; under torch.compile each one inside a compiled
function also breaks the graph.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

# The tensor methods that copy a value to the host (and so wait for the device), by the name
# __torch_function__ sees; printing a tensor goes through __repr__/__str__/__format__.
SYNC_METHODS = {
    "item": ".item()", "tolist": ".tolist()", "cpu": ".cpu()", "numpy": ".numpy()",
    "__bool__": "bool(tensor) (an if/while on a tensor)", "__int__": "int(tensor)", "__float__": "float(tensor)",
    "__repr__": "printing a tensor", "__str__": "printing a tensor", "__format__": "formatting a tensor (f-string)",
}
_TORCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("torch").__file__))) + os.sep + "torch" + os.sep
_THIS = os.path.abspath(__file__)


def graph_count() -> int:
    """Graphs dynamo handed to a backend so far (each recompile, and each piece of a graph break, is one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def recompile_limit() -> int:
    from torch._dynamo import config

    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def reset_compiler() -> None:
    """Forget compiled graphs and zero dynamo's counters, so one pass's counts do not include another's."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(record.getMessage())
        except Exception:  # a record that cannot format is not worth a crash
            pass


@dataclass
class DynamoLog:
    """What dynamo said during a `watch_dynamo()` block, kept off the terminal."""

    recompiles: list[str] = field(default_factory=list)  # "Recompiling function ... triggered by ..." messages
    other: list[str] = field(default_factory=list)  # graph-break warnings and the rest

    def recompile_reasons(self) -> list[str]:
        """The first guard failure of each recompile ("tensor 'ids' size mismatch at index 1. expected 10, actual 12")."""
        reasons = []
        for message in self.recompiles:
            lines = [ln.strip() for ln in message.splitlines() if ln.strip().startswith("- ")]
            reasons.append(lines[0][2:].split(": ", 1)[-1] if lines else message.splitlines()[0])
        return reasons


@contextlib.contextmanager
def watch_dynamo() -> Iterator[DynamoLog]:
    """Turn on torch's `recompiles` log artifact and capture it (and dynamo's graph-break warnings) instead of
    letting it reach the terminal; restore torch's logging after."""
    import torch._logging

    log = DynamoLog()
    capture = _Capture()
    names = ("torch", "torch._dynamo", "torch._inductor")
    saved = {n: list(logging.getLogger(n).handlers) for n in names}
    torch._logging.set_logs(recompiles=True)
    for n in names:
        logger = logging.getLogger(n)
        logger.handlers = [capture]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield log
    finally:
        for n, handlers in saved.items():
            logging.getLogger(n).handlers = handlers
        torch._logging.set_logs()  # back to the defaults (TORCH_LOGS was read at import)
        for message in capture.records:
            (log.recompiles if message.startswith("Recompiling function") else log.other).append(message)


def graph_breaks() -> list[dict[str, object]]:
    """Dynamo's graph breaks so far, one entry per reason (first line), with how often it broke there."""
    from torch._dynamo.utils import counters

    out: Counter[str] = Counter()
    for reason, n in counters["graph_break"].items():
        lines = [ln.strip() for ln in str(reason).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("Explanation:")), "")
        out[lines[0] + (f" ({why})" if why and "item()" not in lines[0] else "") if lines else "?"] += int(n)
    return [{"reason": r, "count": n} for r, n in out.most_common()]


def recompile_limit_hits() -> int:
    """Frames dynamo gave up on because the recompile limit was reached (they then run eagerly)."""
    from torch._dynamo.utils import counters

    return sum(int(n) for reason, n in counters["unimplemented"].items()
               if "recompile limit" in str(reason).lower() or "recompile_limit" in str(reason)
               or "cache_size_limit" in str(reason))


def _caller() -> tuple[str, bool]:
    """'file:line' of the first frame outside torch (and this module); whether it is in library code."""
    frame = sys._getframe(2)
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not name.startswith(_TORCH_DIR) and name != _THIS:
            library = f"{os.sep}site-packages{os.sep}" in name
            short = name.split(f"{os.sep}site-packages{os.sep}", 1)[-1] if library else name
            return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})", library
        frame = frame.f_back
    return "?", True


try:
    from torch.overrides import TorchFunctionMode as _Mode
except ImportError:  # pragma: no cover - every supported torch has it
    _Mode = object


class SyncProbe(_Mode):
    """Records each host synchronisation of a tensor (SYNC_METHODS) with the caller's line.

    Calls made while handling one (printing calls __format__ which calls item, ...) are not counted twice."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Counter[tuple[str, str, bool]] = Counter()
        self._depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kind = SYNC_METHODS.get(name)
        if kind is not None and self._depth == 0:
            where, library = _caller()
            self.found[(kind, where, library)] += 1
        self._depth += kind is not None
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self._depth -= kind is not None

    def report(self, steps: int = 1) -> list[dict[str, object]]:
        return [{"kind": kind, "where": where, "in": "library" if library else "your code", "per_step": n / max(steps, 1)}
                for (kind, where, library), n in self.found.most_common()]
