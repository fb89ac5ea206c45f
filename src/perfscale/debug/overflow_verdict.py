"""The verdict of `debug overflow` from the recorded frames: the first bad value, the frames leading to it,
each module's headroom to its dtype's range, how much of the gradient fp16 would flush to zero without loss
scaling, and the fixes (the checked ones carry the result of their re-run: debug/overflow.py)."""

from __future__ import annotations

import math
from typing import Any

from perfscale.config.precision import MIXED_OF, Precision
from perfscale.debug.hooks import Frame
from perfscale.debug.ranges import RANGES, headroom_bits, largest_safe_scale


def _first(frames: list[Frame]) -> Frame | None:
    return next((f for f in frames if f.first_bad is not None), None)


def _leading(frames: list[Frame], first: Frame, n: int) -> list[Frame]:
    same = [f for f in frames if f.step == first.step and f.phase == first.phase and f.index <= first.index]
    return same[-n:]


def _headroom(frames: list[Frame], top: int = 10, against_fp16: bool = False) -> list[dict[str, Any]]:
    """Per module and phase, the tensor closest to its range over all steps (overflowed ones excluded).
    `against_fp16`: rank by the headroom fp16 would have (for runs in bf16/fp32: would fp16 hold?)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for f in frames:
        for t in f.tensors:
            if t.out_of_range:
                continue
            bits = headroom_bits(t.abs_max, t.range_dtype)
            if bits is None:
                continue
            key = (f.module, f.phase)
            rank = headroom_bits(t.abs_max, "fp16") if against_fp16 else bits
            if key not in best or rank < best[key]["_rank"]:
                best[key] = {"module": f.module or "(model)", "class": f.cls, "phase": f.phase, "tensor": t.role,
                             "dtype": t.range_dtype, "abs_max": t.abs_max, "bits": round(bits, 2), "step": f.step,
                             "fp16_bits": round(headroom_bits(t.abs_max, "fp16"), 2), "_rank": rank}
    rows = sorted(best.values(), key=lambda e: e["_rank"])[:top]
    for row in rows:
        del row["_rank"]
    return rows


def _grad_underflow(frames: list[Frame], loss_scale: float) -> dict[str, Any] | None:
    grads = [(f, t) for f in frames if f.phase == "backward" for t in f.tensors if t.n_below_fp16_subnormal is not None]
    if not grads:
        return None
    total = sum(t.numel for _, t in grads)
    flushed = sum(t.n_below_fp16_subnormal for _, t in grads)
    subnormal = sum(t.n_below_fp16_normal for _, t in grads)
    zeros = sum(t.n_zero for _, t in grads)
    per_module: dict[str, list[int]] = {}
    for f, t in grads:
        acc = per_module.setdefault(f.module or "(model)", [0, 0])
        acc[0] += t.n_below_fp16_subnormal
        acc[1] += t.numel
    worst = sorted(((m, a / n) for m, (a, n) in per_module.items() if n and a), key=lambda x: -x[1])[:5]
    finite_max = max((t.abs_max for _, t in grads if t.abs_max is not None), default=None)
    overflowed = any(t.n_inf or t.n_nan for _, t in grads)  # then the largest gradient is not known
    true_max = finite_max / loss_scale if finite_max and not overflowed else None
    return {
        "values": total, "loss_scale": loss_scale,
        # what fp16 without loss scaling loses: |g| below 2^-24 rounds to 0, below 2^-14 keeps fewer bits
        "fraction_flushed_without_scaling": flushed / total if total else 0.0,
        "fraction_subnormal_without_scaling": subnormal / total if total else 0.0,
        "fraction_zero_as_computed": zeros / total if total else 0.0,
        "largest_gradient": true_max,
        "largest_safe_loss_scale": largest_safe_scale(true_max) if true_max else None,
        "worst_modules": [{"module": m, "fraction_flushed_without_scaling": round(x, 6)} for m, x in worst],
    }


def _pow2(x: float) -> str:
    k = math.log2(x) if x > 0 else 0
    return f"2^{k:.0f}" if abs(k - round(k)) < 1e-9 else f"{x:.3g}"


def _records(frames: list[Frame]) -> list[dict[str, Any]]:
    """One record per (step, phase, module): the extremes over its tensors (and its parameters' gradients)."""
    out: dict[tuple[int, str, str], dict[str, Any]] = {}
    for f in frames:
        key = (f.step, f.phase, f.module)
        r = out.setdefault(key, {"step": f.step, "phase": f.phase, "module": f.module or "(model)", "class": f.cls,
                                 "abs_max": None, "abs_min_nonzero": None, "n_inf": 0, "n_nan": 0})
        for t in f.tensors:
            if t.abs_max is not None:
                r["abs_max"] = t.abs_max if r["abs_max"] is None else max(r["abs_max"], t.abs_max)
            if t.abs_min_nonzero is not None:
                r["abs_min_nonzero"] = t.abs_min_nonzero if r["abs_min_nonzero"] is None else min(r["abs_min_nonzero"], t.abs_min_nonzero)
            r["n_inf"] += t.n_inf
            r["n_nan"] += t.n_nan
    return list(out.values())


def _first_dict(f: Frame) -> dict[str, Any]:
    t = f.first_bad
    return {"step": f.step, "phase": f.phase, "module": f.module or "(model)", "class": f.cls, "tensor": t.role,
            "kind": t.kind, "dtype": t.dtype, "range_dtype": t.range_dtype, "abs_max_finite": t.abs_max,
            "n_inf": t.n_inf, "n_nan": t.n_nan, "numel": t.numel, "range_max": RANGES[t.range_dtype].max}


def _verdict(prec: Precision, first: Frame | None, headroom, underflow, scale: float, infer: bool, steps_run: int) -> str:
    what = f"{steps_run} {'forward pass' if infer else 'training step'}{'es' if infer and steps_run != 1 else ('s' if steps_run != 1 else '')}"
    if first is None:
        text = f"No overflow: in {what} at {prec.name} no value became inf/NaN or left its dtype's range."
        if headroom:
            h = headroom[0]
            if prec.compute_dtype == "fp16":
                text += (f" Closest: {h['module']} ({h['class']}, {h['phase']} {h['tensor']}) reaches {h['abs_max']:.3g}, "
                         f"2^{h['bits']:.1f} below the {h['dtype']} maximum.")
            else:
                text += (f" Against fp16's range (were you to switch; gradients before any loss scale): closest is {h['module']} ({h['class']}, {h['phase']} "
                         f"{h['tensor']}) at {h['abs_max']:.3g}, " + (f"2^{h['fp16_bits']:.1f} below fp16's max." if h["fp16_bits"] >= 0
                                                                    else f"2^{-h['fp16_bits']:.1f} beyond fp16's max: fp16 would overflow."))
        if underflow and underflow["fraction_flushed_without_scaling"] > 0 and prec.compute_dtype == "fp16" and scale == 1.0:
            text += f" But {underflow['fraction_flushed_without_scaling']:.1%} of gradient values lie below fp16's smallest subnormal."
        return text
    t = first.first_bad
    if t.kind in ("nan", "inf"):
        value = f"{t.n_nan + t.n_inf} of {t.numel} values {'NaN' if t.kind == 'nan' else 'inf'}" + (
            f" (computed under {prec.compute_dtype}, max {RANGES[prec.compute_dtype].max:.5g})" if prec.compute_dtype != "fp32" else "")
    else:
        value = f"{t.abs_max:.3g}, beyond the {t.range_dtype} max {RANGES[t.range_dtype].max:.5g}"
    where = f"{first.module or '(model)'} ({first.cls})"
    text = f"Overflow in step {first.step}, {first.phase}: {where} {t.role} holds {value}."
    if first.phase == "backward" and scale != 1.0:
        text += f" The loss scale {_pow2(scale)} multiplies every gradient."
    return text


def _fixes(prec: Precision, first: Frame | None, headroom, underflow, scale: float, infer: bool, checks) -> list[str]:
    fixes: list[str] = []
    fp16 = prec.compute_dtype == "fp16"
    if first is not None:
        name = first.module or "(model)"
        checked = {c["fix"]: c for c in checks}
        if first.phase == "optimizer":
            fixes.append(f"The optimizer step left {name}'s weights {first.first_bad.kind}: with {prec.weight_dtype} weights AdamW's "
                         "state and eps (1e-8, below fp16's smallest subnormal 6e-8, so 0) are 16-bit too, and a parameter "
                         "whose gradient is 0 gets 0/0 = NaN. Keep fp32 master weights (--precision "
                         f"{MIXED_OF[prec.weight_dtype]}) or raise the optimizer's eps")
        elif first.phase == "forward":
            if fp16:
                bf = prec.in_dtype("bf16").name
                c = checked.get(f"--precision {bf} instead of {prec.name}")
                fixes.append(f"Use --precision {bf}: bf16 has fp32's 8-bit exponent (max ~3.4e38), fp16's max is 65504"
                             + (f" [checked: {c['result']}]" if c else ""))
                c = checked.get(f"keep {name} in fp32")
                how = ("run it under torch.autocast(device_type, enabled=False) on fp32 inputs" if prec.mixed else
                       f"load with its weights in fp32 (the model class's _keep_in_fp32_modules, e.g. ['{name.rsplit('.', 1)[-1]}'], "
                       "matches parameter names) and cast its input up")
                fixes.append(f"Keep {name} ({first.cls}) in fp32: {how}" + (f" [checked: {c['result']}]" if c else ""))
            else:
                fixes.append(f"{name} overflows even the range of {first.first_bad.range_dtype}: the values themselves diverge "
                             "(a bad weight or input, or a learning rate too high); inspect its weights and inputs in the frames")
        else:
            good = next((c for c in checks if c["ok"] and c["fix"].startswith("--loss-scale")), None)
            if fp16 and scale != 1.0:
                fixes.append(f"Lower the loss scale: {_pow2(scale)} pushes {name}'s gradients past fp16's range"
                             + (f"; {good['fix']} runs this step without overflow [checked]" if good else
                                "; no smaller scale down to 1 avoided it [checked]" if checks else "")
                             + " (torch.amp.GradScaler skips such a step and halves its scale by itself)")
            if fp16:
                c = next((c for c in checks if c["fix"].startswith("--precision")), None)
                fixes.append("Use --precision bf16-mixed: bf16 needs no loss scaling and its range is fp32's"
                             + (f" [checked: {c['result']}]" if c else ""))
            fixes.append(f"Clip or inspect the gradients of {name}: gradient clipping runs after backward and cannot prevent "
                         "an overflow inside it, but a diverging loss shows here first")
    elif underflow and fp16 and scale == 1.0 and underflow["fraction_flushed_without_scaling"] > 0:
        safe = underflow.get("largest_safe_loss_scale")
        fixes.append(f"Use loss scaling (torch.amp.GradScaler, what TrainingArguments(fp16=True) does): "
                     f"{underflow['fraction_flushed_without_scaling']:.2%} of gradient values flush to zero in fp16 without it"
                     + (f"; a scale up to {_pow2(safe)} keeps the largest gradient in range" if safe else ""))
        fixes.append("Or use --precision bf16-mixed, which needs no loss scaling")
    elif headroom and fp16 and headroom[0]["fp16_bits"] < 2:
        h = headroom[0]
        fixes.append(f"No overflow yet, but {h['module']} is within 2^{h['fp16_bits']:.1f} of fp16's max: a larger input or a few "
                     "more steps may overflow; bf16 removes the risk")
    return fixes


__all__: list[str] = []
