"""ONNX Runtime graph fusions (runtimes/ort_fusion.py) and int8 dynamic quantization, each writing a cached file.

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


def _atomic(dst: Path):
    return dst.with_name(dst.name + f".tmp{os.getpid()}")


def fuse(src: Path, dst: Path, source, *, pack_qkv: bool = True) -> Path:
    """The fused graph of the plain export (runtimes/ort_fusion.py: attention, layer norms, GELU,
    embeddings), cached at dst with its fused-op counts in dst's `.fusions.json`.

    pack_qkv=False keeps the Q, K and V projections as MatMuls (MultiHeadAttention) so that int8
    quantization reaches them.
    """
    if dst.is_file():
        return dst
    from perfscale.runtimes import ort_fusion

    try:
        ort_fusion.fuse(src, dst, source, pack_qkv=pack_qkv)
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX Runtime fusions failed for {source.name!r}: {type(exc).__name__}: {exc}. Run without fusions."
        ) from exc
    return dst


def fused_operator_counts(path: Path) -> dict[str, int]:
    """Fused-operator counts of an ONNX file (runtimes/ort_fusion.fused_op_counts)."""
    from perfscale.runtimes.ort_fusion import fused_op_counts

    return fused_op_counts(path)


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
