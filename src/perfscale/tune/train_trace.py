"""Step 3 of a training tune: trace the top candidates (fake tensors: exact allocated bytes, trace/) to
confirm that they fit; one that does not is pruned. The device overheads the trace does not see are the
estimate's (total - peak)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from perfscale.tune.train_screening import MEMORY_MARGIN, TrainEstimate
from perfscale.tune.train_space import Candidate


def trace_confirm(server, spec, cands, records, space, capacity, device, say, model: str | None = None, *,
                  estimates: dict[Candidate, TrainEstimate]) -> None:
    """Trace each candidate's RunConfig once; a candidate whose traced peak does not fit is pruned."""
    done: dict[Any, dict] = {replace(c, threads=None, workers=0, processes=1): r.trace for c, r in records.items() if r.trace}
    for c in cands:
        if c.zero or c.tp > 1 or c.pp > 1 or c.offload != "none":
            records[c].trace = {"status": "skipped", "reason": "trace models one device or FSDP, not ZeRO/TP/PP/offload"}
            continue
        key = replace(c, threads=None, workers=0, processes=1)  # one rank's program
        if key not in done:
            say(f"trace: {c.name}")
            t0 = time.perf_counter()
            out = server.trace(model or (spec.name if not spec.location else spec.location), key.run_config(space.seq).to_dict(), device)
            if out.get("status") == "ok":
                tr = out["trace"]
                est = estimates[c]
                overhead = (est.total_bytes or 0) - (est.peak_bytes or 0)
                total = tr["peak_bytes"] + overhead
                done[key] = {"status": "ok", "peak_bytes": tr["peak_bytes"], "total_bytes": total, "fits": total <= capacity * (1 - MEMORY_MARGIN),
                             "estimate_error": (est.peak_bytes / tr["peak_bytes"] - 1) if est.peak_bytes and tr["peak_bytes"] else None,
                             "seconds": time.perf_counter() - t0, "method": tr.get("method")}
            else:
                done[key] = {"status": out.get("status"), "reason": out.get("reason"), "fits": None}
        records[c].trace = done[key]
        if done[key].get("fits") is False:
            records[c].status = "pruned"
            records[c].reason = f"does not fit by trace: {done[key]['total_bytes'] / 2**30:.2f} GiB traced > {1 - MEMORY_MARGIN:.0%} of {capacity / 2**30:.2f} GiB"


__all__ = ["trace_confirm"]
