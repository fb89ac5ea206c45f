"""The search space of `tune encoder`: the runtime and quantization variants this CPU can run (ordered by
prior speed, so that a screen cut short by its budget has tried the likeliest winners), then one knob at a
time on the best runtime."""

from __future__ import annotations

from typing import Any

from perfscale.config.precision import Precision


def _runtime_candidates(quick: bool, cpu, backends: tuple[str, ...], include_compile: bool, missing: dict[str, str]):
    """(settings kwargs, skip reason or None) for the runtime/quantization stage, in the screen's order.

    `cpu`: specs.detect.CpuInfo (its ISA flags decide the bf16 and int8 variants); `missing`: backend -> install line
    of the optional backends whose packages are absent (their variants are listed, skipped, with that line)."""
    import importlib.util

    native_bf16 = cpu.native_bf16
    no_bf16 = "this CPU has no native bf16 (avx512_bf16/AMX): bf16 runs emulated, several times slower (FIELD-NOTES)"
    out: list[tuple[dict[str, Any], str | None]] = []
    if "eager" in backends:
        out.append(({"backend": "eager"}, None))
        if not quick:
            out.append(({"backend": "eager", "precision": "bf16-mixed"}, None if native_bf16 else no_bf16))
            out.append(({"backend": "eager", "quantization": "int8-dynamic"}, None))
    if "compile" in backends:
        no_compile = "torch.compile is left out unless asked for (its first compile takes ~30+ s here): add --compile"
        out.append(({"backend": "compile", "pad_multiple": 16}, None if include_compile else no_compile))
        out.append(({"backend": "compile", "precision": "bf16-mixed", "pad_multiple": 16},
                    (None if include_compile else no_compile) if native_bf16 else no_bf16))
    if "onnxruntime" in backends:
        quants = ("int8-dynamic", "int8-per-channel") if quick else ("int8-dynamic", "int8-per-channel", "int8-reduce-range", "int8-per-channel-reduce-range")
        out.append(({"backend": "onnxruntime"}, None))
        if not quick:
            out.append(({"backend": "onnxruntime", "fusions": True}, None))
        out += [({"backend": "onnxruntime", "fusions": True, "quantization": q}, None) for q in quants]
    if "openvino" in backends:
        fast = "bf16-mixed" if native_bf16 else "fp32"
        out.append(({"backend": "openvino", "precision": fast}, None))
        if not quick:
            if native_bf16:
                out.append(({"backend": "openvino"}, None))
            # NNCF calibrates ~20 s (once, cached): left to the full search.
            no_nncf = None if importlib.util.find_spec("nncf") else "NNCF (OpenVINO's int8) is not installed: pip install nncf"
            out.append(({"backend": "openvino", "quantization": "int8-static", "precision": fast}, no_nncf))
    out = [(kw, f"{kw['backend']} is not installed: {missing[kw['backend']]}" if kw["backend"] in missing else skip) for kw, skip in out]
    return sorted(out, key=lambda item: -_prior(item[0], cpu))


# The screen's order: sentences/s of all-MiniLM-L6-v2 on this kind of CPU (FIELD-NOTES, "Inference on this
# CPU"; 2 threads, batch 32), so that a budget that ends the screen early has tried the likeliest winners.
# OpenVINO's: measured here 2026-12-02 on the avx512_bf16/VNNI box (loaded; relative to ORT int8 there), scaled.
# A prior orders the search only: every variant is still gated and timed here.
PRIORS = {("onnxruntime", "int8-per-channel-reduce-range"): 104, ("onnxruntime", "int8-per-channel"): 100,
          ("onnxruntime", "int8-reduce-range"): 95, ("onnxruntime", "int8-dynamic"): 93, ("eager", "int8-dynamic"): 84,
          ("onnxruntime+fusions", "none"): 72, ("compile", "none"): 66, ("onnxruntime", "none"): 65, ("eager", "none"): 57,
          ("openvino", "int8-static"): 90, ("openvino", "none"): 60}
# With native bf16 (measured here, 2026-11-27 and 2026-12-02): OpenVINO bf16 ~1.6x its fp32 and its int8 ~1.6x
# again; torch bf16 autocast about fp32's speed.
BF16_PRIORS = {("openvino", "int8-static"): 112, ("openvino", "none"): 95, ("compile", "none"): 64, ("eager", "none"): 55}


def int8_kernels(cpu) -> str:
    """Which int8 GEMM kernels ONNX Runtime's MLAS and OpenVINO dispatch to on this CPU (by CPUID, at run time)."""
    if cpu.isa.get("amx_int8"):
        return "AMX int8 tiles"
    if cpu.isa.get("avx512_vnni"):
        return "AVX-512 VNNI"
    return "no VNNI (u8s8 products accumulate in int16 and can saturate: reduce_range avoids it)"


def _prior(kwargs: dict[str, Any], cpu) -> float:
    backend = kwargs["backend"] + ("+fusions" if kwargs.get("fusions") and not kwargs.get("quantization") else "")
    quant = kwargs.get("quantization") or "none"
    if Precision.of(kwargs.get("precision") or "fp32").compute_dtype == "bf16":
        if not cpu.native_bf16:
            return 10.0  # 9-10 sentences/s where bf16 was emulated; screened last
        return BF16_PRIORS.get((backend, quant), 50.0)
    prior = PRIORS.get((backend, quant), 50.0)
    if "reduce-range" in quant and (cpu.isa.get("avx512_vnni") or cpu.isa.get("amx_int8")):
        # With VNNI/AMX there is no int16 saturation to avoid: 7-bit weights only lose accuracy (LOG 2026-11-27:
        # per-channel+reduce_range failed the min-cosine bar here, 0.957). Still screened, last of the int8 schemes.
        prior -= 40
    return prior


def _knob_stages(best: dict[str, Any], quick: bool, cores: int, objective: str = "throughput") -> list[tuple[str, list[dict[str, Any]]]]:
    """One knob at a time on the best runtime: (stage name, list of setting overrides).

    objective latency: a request is one sentence, so batch size, padding and length bucketing change nothing
    (padding only adds tokens); threads and inference_mode are what is left."""
    stages = [] if objective == "latency" else [("batch_size", [{"batch_size": b} for b in ((64,) if quick else (16, 64, 128))])]
    if quick and objective == "throughput":
        return stages
    if cores > 1:
        stages.append(("threads", [{"threads": t} for t in sorted({1, cores})]))
    if quick:
        return stages
    if objective == "throughput":
        stages.append(("padding", [{"pad_multiple": 8}]))
        stages.append(("bucketing", [{"sort_by_length": False}]))
    if best.get("backend") in ("eager", "compile"):
        stages.append(("inference_mode", [{"inference_mode": False}]))
    return stages


__all__ = ["BF16_PRIORS", "PRIORS", "int8_kernels"]
