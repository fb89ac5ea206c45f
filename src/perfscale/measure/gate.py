"""The accuracy gate: a variant's outputs against the fp32 eager reference on the same inputs.

Embeddings: cosine similarity per sentence (mean and min). Language models: teacher-forced logits,
max |difference| and top-1 (argmax) agreement per position. Below a threshold -> `inaccurate`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from perfscale.measure.bench_config import TORCH, BenchConfig, GateThresholds


def reference_config(config: BenchConfig) -> BenchConfig:
    """The fp32 eager version of an inference configuration (same model, inputs and threads)."""
    run = replace(config.run, precision="fp32", compile=False, quantization="none")
    return replace(config, runtime=TORCH, encoder_quantization="none", run=run, label=None,
                   extra={k: v for k, v in config.extra.items() if k not in ("encoder",)})


def is_reference(config: BenchConfig) -> bool:
    return config.fingerprint() == reference_config(config).fingerprint()


def compare_outputs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], thresholds: GateThresholds) -> dict[str, Any]:
    """Accuracy metrics and whether they pass; `failures` says which threshold was missed."""
    failures: list[str] = []
    if "embeddings" in ref:
        a = ref["embeddings"].astype(np.float64)
        b = out["embeddings"].astype(np.float64)
        cos = (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        metrics: dict[str, Any] = {"kind": "embeddings", "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "n": int(cos.size)}
        if not np.isfinite(cos).all():
            failures.append("non-finite embeddings")
        if metrics["mean_cosine"] < thresholds.min_mean_cosine:
            failures.append(f"mean cosine {metrics['mean_cosine']:.4f} < {thresholds.min_mean_cosine}")
        if metrics["min_cosine"] < thresholds.min_min_cosine:
            failures.append(f"min cosine {metrics['min_cosine']:.4f} < {thresholds.min_min_cosine}")
    else:
        a = ref["logits"].astype(np.float64)
        b = out["logits"].astype(np.float64)
        diff = float(np.abs(a - b).max())
        top1 = float((a.argmax(-1) == b.argmax(-1)).mean())
        metrics = {"kind": "logits", "max_abs_logit_diff": diff, "top1_agreement": top1, "positions": int(a.shape[0] * a.shape[1])}
        if not np.isfinite(b).all():
            failures.append("non-finite logits")
        if top1 < thresholds.min_top1_agreement:
            failures.append(f"top-1 agreement {top1:.3f} < {thresholds.min_top1_agreement}")
        if diff > thresholds.max_abs_logit_diff:
            failures.append(f"max |logit diff| {diff:.3g} > {thresholds.max_abs_logit_diff}")
    return metrics | {"passed": not failures, "failures": failures, "thresholds": thresholds.to_dict()}


def load_outputs(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
