"""OpenVINO runtime for encoders: the exported ONNX graph compiled by OpenVINO's CPU plugin.

OpenVINO reads the same ONNX file the onnxruntime backend uses (runtimes/onnx_export.py: dynamo
export, inputs bound by name), so both backends run one graph. What its knobs buy (measured here,
all-MiniLM-L6-v2, 2 cores with avx512_bf16/avx512_vnni; benchmarks/LOG.md 2026-12-02):
- precision fp32: `INFERENCE_PRECISION_HINT=f32`. Set explicitly, because OpenVINO's CPU plugin
  *defaults* to bf16 on CPUs with avx512_bf16/AMX: an unset hint would not be fp32 there.
- precision bf16-mixed: `INFERENCE_PRECISION_HINT=bf16`: MatMuls in bf16, fp32 inputs and outputs
  (the autocast of this backend); fast only with native bf16. Cosine vs fp32 eager 0.99998 here.
- quantization int8-static: NNCF post-training quantization (`nncf.quantize`, ModelType.TRANSFORMER:
  SmoothQuant + fast bias correction) calibrated on sentences the caller gives; int8 MatMuls run on
  VNNI/AMX kernels where the CPU has them. Mean / min cosine 0.997 / 0.986 here; quantizing takes
  ~20 s, cached by model, calibration set and library versions.
Absent packages: `openvino` for the backend, `nncf` for int8 (pip install 'perfscale[openvino]').
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from perfscale.errors import UnsupportedModelError
from perfscale.runtimes.onnx_export import export_onnx

INSTALL = "pip install openvino nncf (or pip install 'perfscale[openvino]')"
# Sentences NNCF calibrates on: statistics converge well before this (its own default subset is 300).
CALIBRATION_MAX = 64


def _import_nncf():
    """nncf with its telemetry off. NNCF sends usage events (Google Analytics) by default without asking
    (nncf/telemetry/wrapper.py: enable_opt_in_dialog=False, unless a consent file says no); perfscale reaches no
    network at run time, so its tracked functions get NNCF's own no-op stub. (OpenVINO's own telemetry lives in its
    model-conversion tools, which this backend does not call: it reads the ONNX file.)"""
    import nncf
    import nncf.telemetry
    from nncf.telemetry import decorator, wrapper

    stub = wrapper.NNCFTelemetryStub()
    wrapper.telemetry = decorator.telemetry = nncf.telemetry.telemetry = stub
    return nncf


def int8_model(source, onnx_path: Path, tokenizer, input_names: list[str], max_length: int, calibration: list[str] | None) -> Path:
    """The NNCF int8 OpenVINO IR (model .xml + .bin) next to the ONNX export, made once per calibration set."""
    import openvino as ov

    try:
        nncf = _import_nncf()
    except ImportError as exc:
        raise UnsupportedModelError(f"OpenVINO int8 (int8-static) needs NNCF, which is not installed: {INSTALL}.") from exc
    folder = onnx_path.parent
    existing = sorted(folder.glob("openvino-int8-static-*.xml"), key=lambda f: f.stat().st_mtime)
    if calibration is None:
        if existing:  # the one last made or used with calibration sentences (the tuner's, for its fresh processes)
            return existing[-1]
        raise UnsupportedModelError(
            f"OpenVINO int8 of {source.name!r} is calibrated on sentences and none were given: pass calibration=[...] "
            "to load_encoder, or use perfscale.apply.encoder (it calibrates on the shipped corpus)."
        )
    calibration = list(calibration)[:CALIBRATION_MAX]
    if not calibration:
        raise UnsupportedModelError("OpenVINO int8 needs at least one calibration sentence.")
    key = json.dumps({"sentences": calibration, "max_length": max_length, "openvino": ov.__version__, "nncf": nncf.__version__})
    target = folder / f"openvino-int8-static-{hashlib.sha256(key.encode()).hexdigest()[:10]}.xml"
    if target.is_file():
        os.utime(target)  # the last one used: what a later load without calibration takes
        return target
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    items = []
    for sentence in calibration:  # one sentence per item: NNCF collects statistics over natural lengths
        tokens = tokenizer([sentence], truncation=True, max_length=max_length, return_tensors="np")
        items.append({name: np.asarray(tokens[name], dtype=np.int64) if name in tokens else
                      np.zeros_like(np.asarray(tokens["input_ids"], dtype=np.int64)) for name in input_names})
    tmp = target.with_name(f"tmp{os.getpid()}-{target.name}")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # NNCF draws progress bars: keep stdout clean for --json
            quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(items))
            ov.save_model(quantized, str(tmp))
        os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001 - a quantizer failure is this model's limit, reported as such
        raise UnsupportedModelError(f"NNCF int8 quantization of {source.name!r} failed: {type(exc).__name__}: {exc}. "
                                    "Use OpenVINO without quantization.") from exc
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)
    return target


# OpenVINO's CPU plugin INFERENCE_PRECISION_HINT for a compute dtype (config/precision.py): bf16 runs its bf16 kernels
# (AMX/avx512_bf16), f32 keeps fp32; fp16 is a GPU-plugin precision, mapped for completeness.
_INFERENCE_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def openvino_runner(source, settings, tokenizer, cache_dir=None, calibration: list[str] | None = None):
    """(batch function, the ONNX file it compiled): dict of int64 arrays -> float32 token embeddings on OpenVINO's CPU plugin."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise UnsupportedModelError(f"Backend 'openvino' needs the openvino package, which is not installed: {INSTALL}.") from exc
    input_names = list(tokenizer.model_input_names)
    path = export_onnx(source, input_names, settings.opset, cache_dir)
    if settings.quantization == "int8-static":
        path = int8_model(source, path, tokenizer, [n for n in ("input_ids", "attention_mask", "token_type_ids")
                                                    if n in input_names or n == "attention_mask"],
                          settings.max_length or source.max_length, calibration)
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION_HINT[settings.prec.compute_dtype],
              "PERFORMANCE_HINT": "LATENCY"}  # one stream: a request uses every thread (batch and serving alike)
    if settings.threads:
        config["INFERENCE_NUM_THREADS"] = settings.threads
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"OpenVINO cannot compile {source.name!r}: {type(exc).__name__}: {exc}. "
                                    "Use another backend.") from exc
    request = compiled.create_infer_request()
    wanted = [i.get_any_name() for i in compiled.inputs]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name] if name in batch else np.zeros_like(batch["input_ids"]) for name in wanted}
        return np.array(request.infer(feed)[compiled.outputs[0]], dtype=np.float32)  # a copy: OpenVINO reuses its buffer

    return run, str(path)
