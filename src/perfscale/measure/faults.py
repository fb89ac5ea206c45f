"""Fault injection for testing the harness: a step that runs out of memory, hangs, crashes or raises.

Used by the `selftest` scenario and by tune's trial worker, so both exercise the same failure
paths that real runs hit (DefaultCPUAllocator refusal, time limit, dead process, exception).
"""

from __future__ import annotations

import os
import sys
import time

FAULTS = ("oom", "hang", "crash", "error")


def inject_fault(fault: str | None, who: str) -> None:
    """Misbehave the named way (None: do nothing); `who` names the caller in the messages."""
    if fault == "oom":
        import torch

        torch.empty(1 << 60, dtype=torch.uint8)  # 1 EiB: no machine has it; DefaultCPUAllocator refuses it
    elif fault == "hang":
        time.sleep(10_000)
    elif fault == "crash":
        sys.stderr.write(f"{who}: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif fault == "error":
        raise RuntimeError(f"{who}: step failed on purpose")
