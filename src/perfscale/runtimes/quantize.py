"""ONNX Runtime graph fusions and int8 dynamic quantization, each writing a cached file.

Dynamic quantization stores weights as int8 and quantizes activations per batch at run time
(ONNX Runtime `quantize_dynamic`). The variants differ in accuracy, not only speed:
- int8-dynamic: one scale per weight tensor. FIELD-NOTES (AVX2 box): mean cosine 0.943 vs fp32: fails a 0.99 gate.
- per-channel: one scale per output channel: outliers in one channel no longer crush the others.
- reduce-range: 7-bit weights, which avoids the int16 accumulation overflow of u8s8 kernels
  without VNNI (AVX2); on VNNI CPUs it mostly costs accuracy.
The tuner measures each and keeps only what passes its accuracy gate.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from perfscale.errors import UnsupportedModelError

_QUANT_FLAGS = {
    "int8-dynamic": {"per_channel": False, "reduce_range": False},
    "int8-per-channel": {"per_channel": True, "reduce_range": False},
    "int8-reduce-range": {"per_channel": False, "reduce_range": True},
    "int8-per-channel-reduce-range": {"per_channel": True, "reduce_range": True},
}
# ORT's transformer optimizer knows these encoder families (onnxruntime.transformers.optimizer).
_FUSION_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "mpnet": "bert", "electra": "bert"}


def _atomic(dst: Path):
    return dst.with_name(dst.name + f".tmp{os.getpid()}")


def fuse(src: Path, dst: Path, source) -> Path:
    """ORT transformer fusions (Attention, SkipLayerNormalization, BiasGelu, ...), cached at dst.

    Writes dst/fusions.json with the fused-operator counts, so a report can say what fused.
    """
    if dst.is_file():
        return dst
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = _FUSION_TYPES.get(source.model_type, "bert")
    tmp = _atomic(dst)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            opt = optimize_model(str(src), model_type=model_type, num_heads=source.num_heads or 0,
                                 hidden_size=source.hidden_size or 0, opt_level=1)
            stats = opt.get_fused_operator_statistics()
            opt.save_model_to_file(str(tmp), use_external_data_format=False)
        os.replace(tmp, dst)
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX Runtime fusions failed for {source.name!r}: {type(exc).__name__}: {exc}. Run without fusions."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    import json

    dst.with_suffix(".fusions.json").write_text(json.dumps({k: int(v) for k, v in stats.items()}, indent=2))
    return dst


def fused_operator_counts(path: Path) -> dict[str, int]:
    import json

    f = Path(path).with_suffix(".fusions.json")
    return json.loads(f.read_text()) if f.is_file() else {}


def quantize_int8(src: Path, dst: Path, mode: str) -> Path:
    """int8 dynamic quantization of the MatMul/Gemm weights, cached at dst."""
    if dst.is_file():
        return dst
    from onnxruntime.quantization import QuantType, quantize_dynamic

    flags = _QUANT_FLAGS[mode]
    tmp = _atomic(dst)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"], **flags)
        os.replace(tmp, dst)
    except Exception as exc:
        raise UnsupportedModelError(f"int8 quantization ({mode}) of {src.name} failed: {type(exc).__name__}: {exc}.") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dst
