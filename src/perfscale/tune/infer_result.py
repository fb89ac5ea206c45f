"""What `tune encoder` found: one Variant per configuration tried, the EncoderTuneResult document, and
load_result (the object, its --json dict, or a saved file)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError


@dataclass
class Variant:
    """One configuration tried: how it did on the gate, the screen and (if a finalist) the measurement."""

    label: str
    settings: dict[str, Any]
    stage: str  # baseline | reference | runtime | batch_size | threads | padding | bucketing | inference_mode
    status: str = "pending"  # ok | inaccurate | failed | skipped | slower
    reason: str | None = None
    accuracy: dict[str, Any] | None = None
    screen_rate: float | None = None  # sentences/s, in-process screen (not the final measurement)
    load_s: float | None = None
    onnx_path: str | None = None
    measured: dict[str, Any] | None = None  # from perfscale.measure.compare: throughput, speedup vs baseline
    latency: dict[str, Any] | None = None  # objective latency: single-request latency in the screen (infer_serving)
    # ONNX Runtime variants (issue 21, runtimes/ort_fusion.py): fused operators in the graph run, and the
    # note when the fusion fell back to ORT's optimizer alone.
    fused_ops: dict[str, int] | None = None
    fusion_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EncoderTuneResult:
    """What `tune encoder` found for an encoder; `to_dict()` is the --json document and the saved file."""

    model: str
    model_path: str
    gate: dict[str, float]
    corpus_sentences: int
    variants: list[Variant]
    winner: str  # label of the winning variant (the baseline when nothing beat it)
    winner_settings: dict[str, Any]
    speedup: dict[str, Any] | None  # {ratio, ci_low, ci_high, significant}: time(baseline)/time(winner)
    verdict: str
    measurement: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    kind: str = "encoder"
    objective: str = "throughput"  # throughput | latency: what the winner was picked for (results before: throughput)
    # Serving shapes: batch-1 latency of the baseline and the winner under one interleaved stream of single requests
    # (infer_serving): {method, requests, latency: {label: p50/p90/p99 ...}, p50_speedup}; None in results before it.
    serving: dict[str, Any] | None = None

    @property
    def winner_variant(self) -> Variant:
        return next(v for v in self.variants if v.label == self.winner)

    @property
    def apply_snippet(self) -> str:
        return (
            "import perfscale.apply\n"
            "enc = perfscale.apply.encoder(\"tuned.json\")  # saved with --save tuned.json, or the result / its dict\n"
            "embeddings = enc.encode([\"first sentence\", \"second sentence\"])  # numpy [n, dim]"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["apply_snippet"] = self.apply_snippet
        return data

    def save(self, path: str | os.PathLike) -> Path:
        from perfscale.user_files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n", "--save")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderTuneResult:
        data = {k: v for k, v in data.items() if k != "apply_snippet"}
        data["variants"] = [Variant(**v) for v in data.get("variants", [])]
        return cls(**data)


def load_result(source: str | os.PathLike | dict | EncoderTuneResult) -> EncoderTuneResult:
    """A tune result from the object, its to_dict() document, or a saved JSON file."""
    if isinstance(source, EncoderTuneResult):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            source = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidConfigError(f"Cannot read a tune result from {path}: {exc}. Save one with `perfscale tune encoder --save {path}`.") from exc
    if not isinstance(source, dict) or "winner_settings" not in source:
        raise InvalidConfigError(
            "Not an encoder tune result (no 'winner_settings'): pass the object tune_encoder() returned, the dict of "
            "`perfscale tune encoder --json`, or the file saved with --save."
        )
    try:
        return EncoderTuneResult.from_dict(source)
    except TypeError as exc:
        raise InvalidConfigError(f"Malformed tune result: {exc}. Re-run `perfscale tune encoder --json`.") from exc


__all__ = ["EncoderTuneResult", "Variant", "load_result"]
