"""Exact peaks of an L-layer model from traces of k and k+1 layers (tracing cost independent of L).

A transformer stack repeats one layer. Cut the stack to n layers and trace; every memory level
recorded inside layer i (forward, backward, recomputation) is

    level(i, n) = c + alpha * i + beta * n

because everything else alive at that moment is a sum over layers: parameters, gradients and
optimizer state of all n layers (beta), activations saved by the i layers before it or gradients
of the n-1-i layers after it (alpha, beta), while the op sequence *inside* the layer is the same
for every layer, so the argmax op within a layer region is the same for every i. Regions outside
the layers (embedding, head and loss, optimizer step: foreach ops sum over all parameters) are
affine in n alone. So: trace n = k and n = k+1 (k = 4: two middle layers, then three), fit
alpha and beta per region *and per category*, check the fit on the extra middle layer, and
evaluate at n = L. Within a layer region the maximum over i in [1, L-2] is at an end point.
The first and last layers keep their own fit (embedding output, final norm differ).

Where a max of affine functions would switch pieces, it does so across *regions*, each of which
is extrapolated separately before the max is taken, so the peak at L is exact, not an
extrapolated peak. Anything that breaks the premise (a region present in one trace only, a
non-affine middle layer) raises NotRepeatable and the caller traces the full model.
"""

from __future__ import annotations

import re

from perfscale.trace.result import RawTrace
from perfscale.trace.tracker import BREAKDOWN_KEYS

K = 4  # traced sizes: K and K + 1 layers
MIN_LAYERS = 8  # below this a full trace is as cheap


class NotRepeatable(Exception):
    """The traces do not follow the repeated-layer premise; trace the full model instead."""


def _vec(value: tuple[int, dict[str, int]]) -> list[int]:
    total, snap = value
    return [total] + [snap.get(k, 0) for k in BREAKDOWN_KEYS]


def _unvec(vec: list[int]) -> tuple[int, dict[str, int]]:
    if min(vec) < 0:
        raise NotRepeatable("negative extrapolated bytes")
    return vec[0], dict(zip(BREAKDOWN_KEYS, vec[1:], strict=True))


def _index(raw: RawTrace, n: int):
    fixed: dict[tuple, list[int]] = {}
    mids: dict[tuple, dict[int, list[int]]] = {}
    for (step, phase, (kind, i)), value in raw.regions.items():
        if kind == "after" and i == -1:
            fixed[(step, phase, kind, "start")] = _vec(value)
        elif i == 0:
            fixed[(step, phase, kind, "first")] = _vec(value)
        elif i == n - 1:
            fixed[(step, phase, kind, "last")] = _vec(value)
        else:
            mids.setdefault((step, phase, kind), {})[i] = _vec(value)
    return fixed, mids


def _affine(a: list[int], b: list[int], steps: int) -> list[int]:
    return [x + (y - x) * steps for x, y in zip(a, b, strict=True)]


def extrapolate(raw_k: RawTrace, raw_k1: RawTrace, k: int, layers: int) -> RawTrace:
    """The regions of the `layers`-layer run from runs of k and k+1 layers."""
    fixed_a, mids_a = _index(raw_k, k)
    fixed_b, mids_b = _index(raw_k1, k + 1)
    if set(fixed_a) != set(fixed_b) or set(mids_a) != set(mids_b):
        raise NotRepeatable("the two traces have different regions")
    extra = layers - k
    regions: dict[tuple, tuple[int, dict[str, int]]] = {}
    for (step, phase, kind, role), a in fixed_a.items():
        index = {"start": -1, "first": 0, "last": layers - 1}[role]
        regions[(step, phase, (kind, index))] = _unvec(_affine(a, fixed_b[(step, phase, kind, role)], extra))
    for (step, phase, kind), by_i in mids_a.items():
        other = mids_b[(step, phase, kind)]
        if sorted(by_i) != list(range(1, k - 1)) or sorted(other) != list(range(1, k)):
            raise NotRepeatable(f"middle layers missing in region {step}/{phase}/{kind}")
        alpha = [y - x for x, y in zip(by_i[1], by_i[2], strict=True)]
        for i in range(1, k - 1):
            if [y - x for x, y in zip(other[i], other[i + 1], strict=True)] != alpha:
                raise NotRepeatable(f"middle layers not affine in region {step}/{phase}/{kind}")
        beta = [y - x for x, y in zip(by_i[1], other[1], strict=True)]
        first = [x + b * extra for x, b in zip(by_i[1], beta, strict=True)]
        regions[(step, phase, (kind, 1))] = _unvec(first)
        regions[(step, phase, (kind, layers - 2))] = _unvec([f + a * (layers - 3) for f, a in zip(first, alpha, strict=True)])
    kv = None
    if raw_k.kv_cache_bytes is not None and raw_k1.kv_cache_bytes is not None:
        kv = raw_k.kv_cache_bytes + (raw_k1.kv_cache_bytes - raw_k.kv_cache_bytes) * extra
    return RawTrace(regions=regions, module_peaks=_modules(raw_k, raw_k1, k, layers), num_layers=layers,
                    kv_cache_bytes=kv, notes=list(raw_k1.notes))


def _modules(raw_k: RawTrace, raw_k1: RawTrace, k: int, layers: int) -> dict[str, int]:
    """Module peak increases: affine by name where both traces have the module; the last layer renamed."""
    out = {}
    last = re.compile(rf"(\.layers?\.|\.h\.|\.blocks?\.){k}(\.|$)")
    for name, b in raw_k1.module_peaks.items():
        a = raw_k.module_peaks.get(name)
        value = b if a is None else max(0, b + (b - a) * (layers - k - 1))
        out[last.sub(lambda m: f"{m.group(1)}{layers - 1}{m.group(2)}", name)] = value
    return out


__all__ = ["K", "MIN_LAYERS", "NotRepeatable", "extrapolate"]
