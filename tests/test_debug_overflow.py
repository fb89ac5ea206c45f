"""`debug overflow` on models made to fail, compared with transformers' DebugUnderflowOverflow on the same
model and the same token ids.

- a tiny llama whose one MLP weight (layer 1's up_proj) is scaled so that its fp16 output overflows;
- the same llama with its final norm scaled so that the logits stay in range in forward but lm_head's
  weight gradient overflows in backward under GradScaler's loss scale (2^16);
- the clean llama: no overflow, with the headroom.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re

import pytest
import torch
import transformers
from transformers.debug_utils import DebugUnderflowOverflow

from cli_contract import run_in_process
from perfscale.debug import debug_overflow
from perfscale.debug.ranges import RANGES
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.specs.model import make_config_object
from tiny_configs import tiny_config

BATCH, SEQ = 2, 16


def _llama():
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(make_config_object(tiny_config("llama"), "tiny"))


@pytest.fixture
def ids_file(tmp_path):
    ids = torch.randint(3, 320, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(ids.tolist()))
    return path, ids


def _transformers_verdict(model, ids) -> str | None:
    """The module DebugUnderflowOverflow names: the last frame it dumps before raising (None: no inf/NaN)."""
    DebugUnderflowOverflow(model)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), torch.autocast("cpu", dtype=torch.float16):
            model(input_ids=ids)
    except ValueError as exc:
        assert "inf/nan detected" in str(exc)
        headers = re.findall(r"^ {17} (\S+) (\w+)$", out.getvalue(), re.M)
        return headers[-1][0]
    return None


def test_ranges_are_torch_finfo():
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        info = torch.finfo(dtype)
        assert RANGES[name].max == info.max and RANGES[name].smallest_normal == info.smallest_normal
        assert RANGES[name].smallest_subnormal == info.smallest_normal * info.eps  # 2^-24 for fp16


def test_scaled_mlp_weight_overflows_where_transformers_says(ids_file):
    path, ids = ids_file
    model = _llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(3e5)  # max |w| ~ 2.5e4: in range; its output (~2e5) is not
    assert model.model.layers[1].mlp.up_proj.weight.abs().max() < RANGES["fp16"].max
    result = debug_overflow(model, precision="fp16-mixed", steps=2, batch=BATCH, seq=SEQ, data=path)
    first = result.first
    assert result.overflow and first["module"] == "model.layers.1.mlp.up_proj" and first["phase"] == "forward"
    assert first["tensor"] == "output" and first["kind"] == "inf" and first["step"] == 0
    assert result.steps_run == 1  # stopped after the step that overflowed
    assert result.frames[-1]["module"] == first["module"] and 1 < len(result.frames) <= 21
    # both fixes were run again from the same weights, and both remove the overflow
    checks = {c["fix"]: c["ok"] for c in result.fix_checks}
    assert checks == {"keep model.layers.1.mlp.up_proj in fp32": True, "--precision bf16-mixed instead of fp16-mixed": True}
    assert any("bf16-mixed" in f for f in result.fixes)
    # the same model (weights restored), the same ids: transformers' detector names the same module
    assert _transformers_verdict(model, ids) == first["module"]
    json.dumps(result.to_dict(), allow_nan=False)


def test_logits_overflow_only_in_backward(ids_file):
    path, ids = ids_file
    model = _llama()
    with torch.no_grad():
        model.model.norm.weight.mul_(100)  # lm_head's input x100: logits stay small, its weight gradient does not
    result = debug_overflow(model, precision="fp16-mixed", steps=1, batch=BATCH, seq=SEQ, data=path)
    first = result.first
    assert first["phase"] == "backward" and first["module"] == "lm_head" and first["tensor"] == "grad:weight"
    assert result.loss_scale == 2.0**16 and result.skipped_steps == [0]  # GradScaler would skip this step
    forward_logits = [h for h in _headroom_of(result, "lm_head", "forward")]
    assert all(h > 5 for h in forward_logits)  # the logits are far from fp16's max in forward
    # GradScaler's answer, checked: a lower scale runs this step without overflow; bf16 too
    good = [c for c in result.fix_checks if c["ok"] and c["fix"].startswith("--loss-scale")]
    assert good and good[0]["loss_scale"] < 2.0**16
    assert any(c["ok"] for c in result.fix_checks if c["fix"].startswith("--precision bf16"))
    assert _transformers_verdict(model, ids) is None  # forward hooks alone see nothing


def _headroom_of(result, module, phase):
    return [r for r in (_bits(rec) for rec in result.records if rec["module"] == module and rec["phase"] == phase) if r]


def _bits(rec):
    return math.log2(RANGES["fp16"].max / rec["abs_max"]) if rec["abs_max"] else None


def test_clean_model_has_headroom_and_no_overflow(ids_file):
    path, ids = ids_file
    model = _llama()
    result = debug_overflow(model, precision="fp16-mixed", steps=2, batch=BATCH, seq=SEQ, data=path)
    assert not result.overflow and result.first is None and result.steps_run == 2 and result.skipped_steps == []
    assert result.verdict.startswith("No overflow") and result.headroom
    bits = [h["bits"] for h in result.headroom]
    assert bits == sorted(bits) and 0 < bits[0] < 16  # ranked, closest first, in fp16's range
    assert result.headroom[0]["dtype"] == "fp16"
    assert 0 < result.grad_underflow["fraction_flushed_without_scaling"] < 0.05
    # every module was recorded in both phases, per step
    steps = {(r["step"], r["phase"]) for r in result.records}
    assert steps == {(0, "forward"), (0, "backward"), (1, "forward"), (1, "backward")}
    assert _transformers_verdict(model, ids) is None


def test_unscaled_fp16_gradients_underflow_is_reported(ids_file):
    path, _ = ids_file
    result = debug_overflow(_llama(), precision="fp32", steps=1, batch=BATCH, seq=SEQ, data=path)
    u = result.grad_underflow
    assert not result.overflow and u["loss_scale"] == 1.0
    # the same gradients computed in fp32 and counted against fp16's smallest subnormal
    assert u["fraction_flushed_without_scaling"] > 0 and u["largest_safe_loss_scale"] >= 2.0**10


def test_pure_fp16_adamw_step_leaves_nan_weights(ids_file):
    """Pure fp16 weights: AdamW's eps (1e-8) is 0 in fp16, so rows of the embedding with no gradient get 0/0."""
    path, _ = ids_file
    result = debug_overflow(_llama(), precision="fp16", steps=2, batch=BATCH, seq=SEQ, data=path, check_fixes=False)
    first = result.first
    assert first["phase"] == "optimizer" and first["step"] == 0 and first["kind"] == "nan"
    assert first["module"] == "model.embed_tokens" and first["tensor"] == "weight"
    assert any("fp16-mixed" in f and "eps" in f for f in result.fixes)


def test_inference_mode_runs_forward_only(ids_file):
    path, _ = ids_file
    result = debug_overflow(_llama(), precision="bf16", steps=1, batch=BATCH, seq=SEQ, data=path, infer=True)
    assert result.mode == "infer" and {r["phase"] for r in result.records} == {"forward"} and result.grad_underflow is None


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_bad_inputs_name_the_value(tmp_path):
    with pytest.raises(UnsupportedModelError, match="cannot be hooked"):
        debug_overflow(torch.jit.script(torch.nn.Linear(2, 2)))
    with pytest.raises(InvalidConfigError, match="fp8.*fp16-mixed"):
        debug_overflow(_llama(), precision="fp8")
    with pytest.raises(InvalidConfigError, match="--steps 0"):
        debug_overflow(_llama(), steps=0)
    with pytest.raises(InvalidConfigError, match="max_position_embeddings"):
        debug_overflow(_llama(), seq=4096, batch=1)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 99999]")
    with pytest.raises(InvalidConfigError, match="99999 is outside"):
        debug_overflow(_llama(), data=bad)
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(InvalidConfigError, match="no tokenizer"):
        debug_overflow(_llama(), data=text)


def test_cli_loads_a_saved_model_that_overflows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _llama()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(3e5)
    model.save_pretrained(tmp_path / "broken")
    code, out, err, _ = run_in_process(["debug", "overflow", "--model", str(tmp_path / "broken"), "--steps", "1",
                                        "--seq", "16", "--no-check-fixes", "--json"], 120.0)
    assert code == 0, err[-2000:]
    doc = json.loads(out)
    assert doc["overflow"] and doc["first"]["module"] == "model.layers.0.mlp.up_proj" and doc["fix_checks"] == []
    code, out, err, _ = run_in_process(["debug", "overflow", "--precision", "fp8", "--json"], 60.0)
    assert code == 2 and "fp8" in json.loads(out)["error"]["message"] and "Traceback" not in err
