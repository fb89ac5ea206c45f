"""Step 2 of a training tune: estimate every point of the space (< 1 ms each), drop what does not fit
with a margin, drop what the estimate puts far behind its best (e.g. checkpointing's recomputation when
memory is plentiful), and rank the rest.

Each candidate's numbers travel as a TrainEstimate; its `to_dict()` is what the trial record keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from perfscale.tune.result import TrialRecord
from perfscale.tune.train_space import Candidate

MEMORY_MARGIN = 0.10  # keep 10% of the device free: estimate error, allocator, the rest of the process
ESTIMATE_TOLERANCE = 0.2  # within 20% of the best estimate the estimate cannot decide: measure


@dataclass(frozen=True, slots=True)
class TrainEstimate:
    """The estimate engine's answer for one candidate on this topology, as the tune reads it.

    A refused configuration (the engine raised a PerfscaleError) has `error` and no numbers, and never fits.
    """

    tokens_per_s: float | None = None  # estimate.time.tokens_per_second
    step_s: float | None = None  # one optimizer step
    peak_bytes: int | None = None  # one rank's allocated tensor peak (trace's peak_bytes)
    total_bytes: int | None = None  # peak + device overheads, times the DDP ranks sharing the machine
    binding: str | None = None  # what bounds the step: memory | compute | communication | ...
    capacity_bytes: int | None = None  # what the run may use (capacity())
    fits: bool = False  # total_bytes within (1 - MEMORY_MARGIN) of capacity_bytes
    error: str | None = None  # why the engine refused it

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error, "fits": False}
        return {"tokens_per_s": self.tokens_per_s, "step_s": self.step_s, "peak_bytes": self.peak_bytes,
                "total_bytes": self.total_bytes, "binding": self.binding, "capacity_bytes": self.capacity_bytes,
                "fits": self.fits}


def capacity(topology, local: bool) -> tuple[int, str]:
    """Bytes a run may use, and where that number comes from."""
    cap = int(topology.hardware.memory_bytes.value or 0)
    if local and topology.hardware.kind == "cpu":
        import psutil

        avail = psutil.virtual_memory().available
        if avail < cap:
            return int(avail), "available RAM now (psutil), not the total: other processes hold the rest"
    return cap, f"{topology.hardware.name} memory"


def estimate_all(spec, space_cands: list[Candidate], topology, seq: int, capacity: int) -> dict[Candidate, TrainEstimate]:
    """Estimate of each candidate; threads and workers do not change it, so equal keys share one."""
    from perfscale.errors import PerfscaleError
    from perfscale.estimate import estimate

    cache: dict[Candidate, TrainEstimate] = {}
    out = {}
    for c in space_cands:
        key = replace(c, threads=None, workers=0, processes=1)
        if key not in cache:
            try:
                e = estimate(spec, key.run_config(seq), topology)
                cache[key] = TrainEstimate(tokens_per_s=e.time.tokens_per_second, step_s=e.time.step_seconds,
                                           peak_bytes=e.memory.peak_bytes, total_bytes=e.memory.total_bytes, binding=e.binding)
            except PerfscaleError as exc:
                cache[key] = TrainEstimate(error=str(exc))
        est = cache[key]
        if est.error is None:
            # DDP ranks on one machine: each holds its own copy of the model and its per-rank batch, so the
            # machine's memory holds `processes` times one rank; the estimate cannot rank threads or ranks here.
            total = est.total_bytes * c.processes
            est = replace(est, total_bytes=total, capacity_bytes=capacity, fits=total <= capacity * (1 - MEMORY_MARGIN))
        out[c] = est
    return out


def rank_key(baseline: Candidate, best_tps: float):
    """Best estimate first; within the estimate's resolution, larger micro-batches, then fewer changes from the defaults."""
    def key(item: tuple[Candidate, TrainEstimate]):
        c, est = item
        bucket = round(est.tokens_per_s / best_tps / 0.02)  # 2% buckets: closer than that is a tie
        return (-bucket, -c.micro_batch, len(c.differences(baseline)), c.name)
    return key


def screen(cands: list[Candidate], estimates: dict[Candidate, TrainEstimate], records: dict[Candidate, TrialRecord],
           baseline: Candidate, capacity: int, cap_source: str) -> list[Candidate] | None:
    """Prune (in `records`, with the reason) what does not fit and what the estimate puts more than
    ESTIMATE_TOLERANCE behind its best; return the rest best first (the baseline kept for the comparison),
    or None when nothing fits."""
    fitting = [(c, estimates[c]) for c in cands if estimates[c].fits]
    for c in cands:
        est = estimates[c]
        if est.error is not None:
            records[c].status, records[c].reason = "pruned", est.error
        elif not est.fits:
            records[c].status = "pruned"
            records[c].reason = (f"does not fit: estimated {est.total_bytes / 2**30:.2f} GiB > {1 - MEMORY_MARGIN:.0%} of "
                                 f"{capacity / 2**30:.2f} GiB ({cap_source})")
    if not fitting:
        return None
    best_tps = max(e.tokens_per_s for _, e in fitting)
    kept = []
    for c, est in sorted(fitting, key=rank_key(baseline, best_tps)):
        if est.tokens_per_s < best_tps * (1 - ESTIMATE_TOLERANCE) and c != baseline:
            records[c].status = "pruned"
            records[c].reason = f"estimated {1 - est.tokens_per_s / best_tps:.0%} slower than the best estimate" + (
                " (checkpointing recomputes the forward)" if c.checkpointing else "")
        else:
            kept.append(c)
    return kept


__all__ = ["ESTIMATE_TOLERANCE", "MEMORY_MARGIN", "TrainEstimate", "capacity", "estimate_all", "rank_key", "screen"]
