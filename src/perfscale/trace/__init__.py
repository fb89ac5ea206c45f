"""The trace engine: the real transformers model run on fake tensors, with PyTorch's memory tracker.

    from perfscale.trace import trace
    result = trace("llama-3.1-8b", RunConfig(TrainWorkload(4, 2048), precision="bf16-mixed"))
    result.peak_bytes, result.breakdown, result.phase

Exact allocated bytes of the traced program, no accelerator needed; see docs/trace.md.
"""

from __future__ import annotations

from perfscale.trace.api import trace
from perfscale.trace.result import TraceResult

__all__ = ["TraceResult", "trace"]
