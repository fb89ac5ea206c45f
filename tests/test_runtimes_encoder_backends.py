"""The optional encoder backends (OpenVINO fp32 / bf16 / NNCF int8) and the CPU-flag-driven candidates."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.runtimes.encoder import EncoderSettings, load_encoder

from cli_helpers import assert_user_error
from test_runtimes_encoder import SENTENCES, cosines, make_tiny_encoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder-backends"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def reference(tiny):
    return load_encoder(str(tiny), EncoderSettings()).encode(SENTENCES)


def test_openvino_fp32_and_bf16_match_eager(tiny, cache, reference):
    from perfscale.specs.detect import detect_cpu

    fp32 = load_encoder(str(tiny), EncoderSettings(backend="openvino"), cache_dir=cache)
    out = fp32.encode(SENTENCES)
    assert out.shape == reference.shape and out.dtype == np.float32
    # fp32 really is fp32: OpenVINO's CPU plugin defaults to bf16 on avx512_bf16/AMX CPUs unless told f32.
    np.testing.assert_allclose(out, reference, atol=2e-5)
    assert fp32.onnx_path.endswith("model.onnx")  # the same exported graph the onnxruntime backend runs
    np.testing.assert_allclose(fp32.encode(list(reversed(SENTENCES))), reference[::-1], atol=2e-5)  # buffers not shared
    bf16 = load_encoder(str(tiny), EncoderSettings(backend="openvino", precision="bf16-mixed", threads=1), cache_dir=cache)
    cos = cosines(bf16.encode(SENTENCES), reference)
    assert cos.min() > 0.99, cos  # bf16 matmuls: close, not equal
    if detect_cpu().native_bf16:
        assert np.abs(bf16.encode(SENTENCES) - reference).max() > 1e-6  # the hint took effect: not the fp32 program


def test_openvino_int8_static_is_calibrated_cached_and_gated(tiny, cache, reference):
    pytest.importorskip("nncf")  # optional (not in the test extra); openvino is, so it is never skipped
    settings = EncoderSettings(backend="openvino", quantization="int8-static")
    fresh = cache  # the export made by the test above; no int8 model in it yet
    with pytest.raises(UnsupportedModelError, match="calibrat"):  # no cached model and nothing to calibrate on
        load_encoder(str(tiny), settings, cache_dir=fresh)
    enc = load_encoder(str(tiny), settings, cache_dir=fresh, calibration=SENTENCES * 3)
    assert "openvino-int8-static-" in enc.onnx_path and enc.onnx_path.endswith(".xml")
    cos = cosines(enc.encode(SENTENCES), reference)
    assert np.isfinite(cos).all() and cos.mean() > 0.9, cos  # int8 of a random 2-layer model: close, gated by the tuner
    again = load_encoder(str(tiny), settings, cache_dir=fresh)  # the tuner's fresh processes: the cached model, no calibration
    assert again.onnx_path == enc.onnx_path
    np.testing.assert_allclose(again.encode(SENTENCES), enc.encode(SENTENCES), atol=1e-5)


def test_settings_of_the_new_backends():
    EncoderSettings(backend="openvino", quantization="int8-static", precision="bf16-mixed")  # int8 + bf16 rest: OpenVINO only
    EncoderSettings(backend="compile", precision="bf16-mixed", pad_multiple=16)
    for bad, says in (({"backend": "openvino", "quantization": "int8-dynamic"}, "takes none or int8-static"),
                      ({"backend": "onnxruntime", "quantization": "int8-static"}, "needs backend 'openvino'"),
                      ({"backend": "onnxruntime", "precision": "bf16-mixed"}, "no bf16 GEMM"),
                      ({"backend": "eager", "quantization": "int8-dynamic", "precision": "bf16-mixed"}, "cannot be combined"),
                      ({"backend": "openvino", "fusions": True}, "fusions")):
        with pytest.raises(InvalidConfigError, match=says):
            EncoderSettings(**bad)
    with pytest.raises(InvalidConfigError, match="openvino"):  # the error names the valid choices
        EncoderSettings(backend="tensorrt")
    assert EncoderSettings(backend="openvino", quantization="int8-static", precision="bf16-mixed").label() == "openvino int8-static bf16-mixed b32"


def test_an_absent_backend_is_skipped_in_the_search_and_refused_when_named(tiny, monkeypatch):
    from perfscale.runtimes import encoder
    from perfscale.tune.infer import _runtime_candidates, tune_encoder

    real = encoder.backend_missing
    monkeypatch.setattr(encoder, "backend_missing", lambda b: "pip install openvino nncf" if b == "openvino" else real(b))
    with pytest.raises(InvalidConfigError, match="pip install openvino") as err:
        encoder.require_backend("openvino")
    assert "Installed backends: eager, compile" in str(err.value)
    with pytest.raises(InvalidConfigError, match="pip install openvino"):
        load_encoder(str(tiny), EncoderSettings(backend="openvino"))
    with pytest.raises(InvalidConfigError, match="'openvino' is not installed"):  # named: before any work
        tune_encoder(str(tiny), backends=("eager", "openvino"))
    cpu = _cpu(bf16=True, vnni=True)
    listed = _runtime_candidates(False, cpu, ("eager", "openvino"), False, {"openvino": "pip install openvino nncf"})
    ov = [skip for kw, skip in listed if kw["backend"] == "openvino"]
    assert ov and all(s and "openvino is not installed: pip install openvino" in s for s in ov)


def _cpu(bf16: bool, vnni: bool):
    from perfscale.specs.detect import CpuInfo

    return CpuInfo(model="test", physical_cores=2, logical_cores=2, memory_bytes=1 << 30, mhz=None,
                   isa={"avx512f": True, "avx512_bf16": bf16, "avx512_vnni": vnni})


def test_candidates_follow_the_cpu_flags():
    from perfscale.tune.infer_space import _runtime_candidates, int8_kernels

    backends = ("eager", "compile", "onnxruntime", "openvino")
    plain = _runtime_candidates(False, _cpu(bf16=False, vnni=False), backends, True, {})
    bf16 = [(kw, skip) for kw, skip in plain if kw.get("precision") == "bf16-mixed"]
    assert {kw["backend"] for kw, _ in bf16} == {"eager", "compile"}  # torch autocast and compile + autocast, listed as skipped
    assert all(skip and "no native bf16" in skip for _, skip in bf16)
    ov = [kw for kw, _ in plain if kw["backend"] == "openvino"]
    assert ov and all(kw.get("precision", "fp32") == "fp32" for kw in ov)  # OpenVINO runs fp32 there instead
    ov_native = {(kw.get("quantization", "none"), kw.get("precision", "fp32"))
                 for kw, _ in _runtime_candidates(False, _cpu(bf16=True, vnni=True), backends, True, {}) if kw["backend"] == "openvino"}
    assert ov_native == {("none", "bf16-mixed"), ("none", "fp32"), ("int8-static", "bf16-mixed")}
    native = _runtime_candidates(False, _cpu(bf16=True, vnni=True), backends, True, {})
    # native bf16: none is skipped for the CPU (OpenVINO's int8 only where NNCF is not installed, as in CI)
    assert all(skip is None or skip.startswith("NNCF") for kw, skip in native if kw.get("precision") == "bf16-mixed")
    ort_int8 = [kw["quantization"] for kw, _ in native if kw["backend"] == "onnxruntime" and kw.get("quantization")]
    assert ort_int8[-2:] == ["int8-reduce-range", "int8-per-channel-reduce-range"] or set(ort_int8[-2:]) == {
        "int8-reduce-range", "int8-per-channel-reduce-range"}  # VNNI: no saturation to avoid, reduce_range screened last
    no_vnni = [kw["quantization"] for kw, _ in plain if kw["backend"] == "onnxruntime" and kw.get("quantization")]
    assert no_vnni[0] == "int8-per-channel-reduce-range"  # without VNNI the 7-bit scheme is the likeliest accurate one
    assert int8_kernels(_cpu(bf16=True, vnni=True)) == "AVX-512 VNNI" and "reduce_range" in int8_kernels(_cpu(False, False))


def test_cli_names_an_absent_backend_and_a_bad_objective(tiny, tmp_path):
    import subprocess

    hide = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'openvino': raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from perfscale.cli.app import run; run()\n")
    proc = subprocess.run([sys.executable, "-c", hide, "tune", "encoder", "--model", str(tiny), "--backends", "eager,openvino",
                           "--objective", "latency"], capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "'openvino' is not installed", "pip install openvino")
    proc = subprocess.run([sys.executable, "-c", "from perfscale.cli.app import run; run()", "tune", "encoder", "--model",
                           str(tiny), "--objective", "fast", "--json"], capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "'fast'", "throughput, latency")


def test_nncf_telemetry_is_off():
    """NNCF sends usage events by default (no consent asked); perfscale turns them off. Checked outside pytest,
    because NNCF itself goes quiet when it sees pytest imported."""
    pytest.importorskip("nncf")
    import subprocess

    code = ("from perfscale.runtimes.openvino import _import_nncf\n"
            "_import_nncf()\n"
            "from nncf.telemetry import decorator, wrapper\n"
            "print(type(decorator.telemetry).__name__, type(wrapper.telemetry).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["MagicMock", "MagicMock"], proc.stdout  # NNCF's own no-op stub, not NNCFTelemetry
