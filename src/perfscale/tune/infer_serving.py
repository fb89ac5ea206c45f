"""Serving shapes for encoders: latency of single requests, what an online service sees.

A batch throughput says little about a service that gets one sentence at a time: per-call overhead
(Python, tokenisation, kernel launch, thread wake-up) dominates a batch of one. This module times a
stream of single requests, `encoder.encode([sentence])` back to back (closed loop: the next request
is sent when the last one returns, so there is no queueing delay), each sentence a different one of
the corpus so that lengths vary as they do in traffic.

Several encoders are timed in ONE interleaved run: request i goes to every encoder before request
i+1, the order rotating per request, so a load spike on a shared machine hits all of them alike
(../shared/STYLE.md, sound timing: compare A and B interleaved). The speed-up of B over A is the ratio
of their median latencies, with a 95% CI from a paired bootstrap over requests (each request's pair
of latencies is resampled together, which keeps what the two shared at that moment).
p99 of n requests is numpy's linear-interpolated percentile: with fewer than 100 requests it sits
between the two slowest, so `n` is reported beside it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# Requests discarded per encoder before timing (first calls allocate arenas, pick kernels, compile).
WARMUP_REQUESTS = 3
BOOTSTRAP_SAMPLES = 2000


def stream_latencies(encoders: dict[str, Any], requests: list[str], *, warmup: int = WARMUP_REQUESTS,
                     max_time_s: float | None = None, min_requests: int = 16) -> dict[str, list[float]]:
    """Seconds per single-sentence request for each encoder, timed interleaved over the same stream.

    Stops after `max_time_s` of timing once at least `min_requests` requests are done (a slow machine
    gives fewer requests, never an unbounded run); every encoder has then served the same requests.
    """
    if not requests:
        return {label: [] for label in encoders}
    items = list(encoders.items())
    for sentence in requests[: max(0, warmup)]:
        for _label, encoder in items:
            encoder.encode([sentence])
    out: dict[str, list[float]] = {label: [] for label, _ in items}
    started = time.perf_counter()
    for i, sentence in enumerate(requests):
        if max_time_s is not None and i >= min_requests and time.perf_counter() - started > max_time_s:
            break
        for j in range(len(items)):
            label, encoder = items[(i + j) % len(items)]
            t0 = time.perf_counter()
            encoder.encode([sentence])
            out[label].append(time.perf_counter() - t0)
    return out


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    """p50 / p90 / p99 / mean in milliseconds, and the requests per second of one closed-loop client."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "requests_per_s": None}
    a = np.asarray(seconds, dtype=float) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "requests_per_s": float(1e3 / a.mean())}


def p50_speedup(baseline: list[float], candidate: list[float], *, seed: int = 0) -> dict[str, Any] | None:
    """median(baseline) / median(candidate) with a paired-bootstrap 95% CI; `significant`: the CI is above 1."""
    n = min(len(baseline), len(candidate))
    if n < 2:
        return None
    b, c = np.asarray(baseline[:n], dtype=float), np.asarray(candidate[:n], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    ratios = np.median(b[idx], axis=1) / np.median(c[idx], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    ratio = float(np.median(b) / np.median(c))
    return {"ratio": ratio, "ci_low": float(low), "ci_high": float(high), "significant": bool(low > 1), "pairs": n}


__all__ = ["latency_summary", "p50_speedup", "stream_latencies"]
