"""The Precision value object and the optimizer names: decoded once, and every engine builds the
optimizer the Trainer builds for that name on that device."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

from perfscale.config import DEFAULT_OPTIMIZER, OPTIMIZERS, PRECISIONS, Precision, RunConfig, build_optimizer
from perfscale.config.optimizer import OPTIMIZER_ALIASES, canonical_optimizer, foreach_copy, uses_foreach
from perfscale.errors import InvalidConfigError
from perfscale.estimate import estimate
from perfscale.estimate.core import constants_for
from perfscale.estimate.knobs import Knobs
from perfscale.specs import TrainWorkload, parse_topology, spec_from_config
from perfscale.trace import trace
from tiny_configs import tiny_config

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "perfscale"


def test_each_precision_decoded():
    fields = {name: (p.weight_dtype, p.compute_dtype, p.mixed, p.autocast_dtype, p.weight_bytes, p.compute_bytes, p.peak_key)
              for name, p in PRECISIONS.items()}
    assert fields == {
        "fp32": ("fp32", "fp32", False, None, 4, 4, "fp32"),
        "bf16": ("bf16", "bf16", False, None, 2, 2, "bf16"),
        "fp16": ("fp16", "fp16", False, None, 2, 2, "fp16"),
        "bf16-mixed": ("fp32", "bf16", True, "bf16", 4, 2, "bf16"),
        "fp16-mixed": ("fp32", "fp16", True, "fp16", 4, 2, "fp16"),
    }
    mixed = Precision.of("bf16-mixed")
    assert mixed.torch_weight_dtype() is torch.float32 and mixed.torch_autocast_dtype() is torch.bfloat16
    assert Precision.of("fp16").torch_autocast_dtype() is None and Precision.of("fp16").torch_weight_dtype() is torch.float16
    assert Precision.of("fp16-mixed").loss_scaling and not Precision.of("bf16-mixed").loss_scaling


def test_one_object_per_name_shared_by_config_and_knobs():
    assert Precision.of("bf16-mixed") is Precision.of("bf16-mixed") is PRECISIONS["bf16-mixed"]
    config = RunConfig(TrainWorkload(1, 8), precision="bf16-mixed")
    assert config.prec is Precision.of("bf16-mixed")
    k = Knobs.from_run_config(config)
    assert k.prec is config.prec
    assert k.copy(precision="fp32").prec is PRECISIONS["fp32"] and k.copy(batch=2).prec is k.prec
    assert "prec" not in k.as_dict()
    with pytest.raises(InvalidConfigError, match="fp32, bf16, fp16, bf16-mixed, fp16-mixed"):
        Precision.of("fp8")


def test_json_keeps_the_precision_string():
    by_object = RunConfig(TrainWorkload(1, 8), precision=Precision.of("bf16-mixed"))
    by_name = RunConfig(TrainWorkload(1, 8), precision="bf16-mixed")
    assert by_object == by_name and by_object.to_dict()["precision"] == "bf16-mixed"


def test_no_module_but_the_config_layer_decodes_the_precision_string():
    """The decodings issue 13 found (suffix tests, prefix splits, per-module dtype tables) stay gone."""
    pattern = re.compile(r"""precision\)?\.(endswith|startswith|split|replace)\(|"bf16-mixed": "(float32|bf16)"|"bfloat16" if""")
    offenders = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
                 if path.parent.name != "config" and pattern.search(path.read_text())]
    assert offenders == []


def test_optimizer_aliases_normalise_to_trainer_names():
    assert DEFAULT_OPTIMIZER == "adamw_torch_fused"
    for old, new in OPTIMIZER_ALIASES.items():
        assert new in OPTIMIZERS
        assert RunConfig(TrainWorkload(1, 8), optimizer=old).optimizer == new
        assert Knobs(optimizer=old).optimizer == new
    # documents written before the rename still load, and are written back with the Trainer name
    old_doc = RunConfig(TrainWorkload(1, 8)).to_dict() | {"optimizer": "adamw-fused"}
    assert RunConfig.from_dict(old_doc).optimizer == "adamw_torch_fused"


def test_default_is_the_trainer_default(tmp_path):
    from transformers import TrainingArguments

    assert TrainingArguments(output_dir=str(tmp_path), use_cpu=True).optim.value == DEFAULT_OPTIMIZER
    assert RunConfig(TrainWorkload(1, 8)).optimizer == DEFAULT_OPTIMIZER == Knobs().optimizer


def _groups(opt) -> dict:
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


@pytest.mark.parametrize("name", ["adamw_torch", "adamw_torch_fused", "sgd", "adafactor", "adamw", "adamw-fused"])
def test_each_name_builds_the_trainers_optimizer(name, tmp_path):
    """Against transformers' own Trainer.get_optimizer_cls_and_kwargs, on CPU tensors."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, optim=canonical_optimizer(name))
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    theirs = cls([torch.nn.Parameter(torch.zeros(4, 4))], **kwargs)
    ours = build_optimizer(name, [torch.nn.Parameter(torch.zeros(4, 4))], "cpu")
    assert type(ours) is type(theirs)
    expected = _groups(theirs)
    if expected.get("foreach", False) is None and not expected.get("fused"):
        # torch resolves foreach=None at step() from the tensors' device: the loop for CPU tensors
        from torch.optim.optimizer import _default_to_fused_or_foreach

        _fused, foreach = _default_to_fused_or_foreach([torch.zeros(1)], False, False)
        expected["foreach"] = foreach
    assert _groups(ours) == expected


def test_foreach_per_device():
    assert uses_foreach("adamw_torch", "cuda") and not uses_foreach("adamw_torch", "cpu")
    assert not uses_foreach("adamw_torch_fused", "cuda") and uses_foreach("sgd", "cuda")
    assert foreach_copy("adamw", "cuda") and not foreach_copy("adamw_torch", "cpu") and not foreach_copy("sgd", "cuda")
    assert build_optimizer("adamw_torch", [torch.nn.Parameter(torch.zeros(2))], "cuda").defaults["foreach"] is True


def test_8bit_needs_bitsandbytes_like_the_trainer(tmp_path):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        from transformers import Trainer, TrainingArguments

        with pytest.raises(ImportError):
            Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, optim="adamw_bnb_8bit"))
        with pytest.raises(ImportError):
            build_optimizer("adamw-8bit", [torch.nn.Parameter(torch.zeros(2))], "cpu")
    else:
        opt = build_optimizer("adamw_8bit", [torch.nn.Parameter(torch.zeros(2))], "cpu")
        assert type(opt).__name__ == "AdamW" and opt.defaults["optim_bits"] == 8


def test_adamw_torch_peak_cpu_vs_cuda_program():
    """adamw_torch is foreach on CUDA (one fp32 copy of every parameter during the step) and the
    per-parameter loop on CPU (two copies of the largest parameter); fused holds neither. The
    estimate follows both programs."""
    spec = spec_from_config(tiny_config("llama", hidden_size=256, intermediate_size=512, vocab_size=2048), "llama")
    params, largest = spec.params.total, constants_for(spec).largest_matrix
    peaks = {}
    for program in ("cuda", "cpu"):
        for opt in ("adamw_torch", "adamw_torch_fused"):
            config = RunConfig(TrainWorkload(2, 32), optimizer=opt)
            traced = trace(spec, config, device=program)
            peaks[program, opt] = traced.phase_peaks["optimizer"]
            hw = parse_topology("H100-80GB" if program == "cuda" else "cpu")
            assert estimate(spec, config, hw).memory.peak_bytes == pytest.approx(traced.peak_bytes, rel=0.01), (program, opt)
    foreach = peaks["cuda", "adamw_torch"] - peaks["cuda", "adamw_torch_fused"]
    loop = peaks["cpu", "adamw_torch"] - peaks["cpu", "adamw_torch_fused"]
    assert foreach == pytest.approx(4 * params, abs=4096)  # the fp32 copy of all parameters
    assert loop == pytest.approx(2 * 4 * largest, abs=4096)
    assert foreach - loop == pytest.approx(4 * (params - 2 * largest), abs=8192)
