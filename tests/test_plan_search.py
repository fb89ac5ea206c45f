"""The plan search finds the layouts the best clusters run (issue 14 item 6): a fixed global batch,
memory savers switched on only while a configuration does not fit, and the Llama 3 405B layout."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_user_error, run_cli

from perfscale.cli.app import main
from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.estimate.knobs import Knobs
from perfscale.specs import TrainWorkload, get_hardware, load_model_spec, parse_topology
from perfscale.tune import plan as P
from perfscale.tune import space

GPU = get_hardware("H100-80GB")


def test_memory_savers_climb_one_at_a_time_and_respect_what_the_user_fixed():
    k = Knobs(batch=1, seq=4096, tp=8, precision="bf16-mixed")
    ladder = space.memory_savers(k, {}, GPU)
    assert [(v.sequence_parallel, v.fused_kernels, v.selective_recompute) for v in ladder] == [
        (False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    assert len(space.memory_savers(k.copy(tp=1), {}, GPU)) == 3  # no sequence parallelism without tensor parallelism
    assert len(space.memory_savers(k.copy(checkpointing=True), {}, GPU)) == 3  # full recomputation already
    fixed = {"sequence_parallel": False, "fused_kernels": False, "selective_recompute": False}
    assert space.memory_savers(k, fixed, GPU) == [k]  # the user said no
    assert space.memory_savers(k, {}, parse_topology("8xH100-80GB").hardware)[-1].selective_recompute


def test_savers_only_where_needed():
    """A model that fits plainly keeps the plain configuration first; the savers appear only in plans
    that need them to fit (ties go to fewer changes)."""
    small = P.plan("llama-3.1-8b", "8xH100-80GB", TrainWorkload(1, 2048), top=3)
    for est in small.configs:
        assert not (est.knobs["sequence_parallel"] or est.knobs["fused_kernels"] or est.knobs["selective_recompute"])


def test_global_batch_is_held_across_layouts():
    result = P.plan("llama-3.1-8b", "2x8xH100-80GB", TrainWorkload(1, 4096), global_batch=64, top=10)
    assert result.configs
    for est in result.configs:
        k = est.knobs
        assert k["batch"] * k["accum"] * est.data_parallel == 64 and est.data_parallel == 16 // (k["tp"] * k["pp"]), k
    given = P.plan("llama-3.1-8b", "2x8xH100-80GB", TrainWorkload(1, 4096, 8), global_batch=64, grad_accum=8, top=5)
    assert given.configs and all(est.knobs["accum"] == 8 for est in given.configs)


@pytest.mark.parametrize("value", [0, -4, 2**25, 1.5, True])
def test_bad_global_batch_is_refused(value):
    with pytest.raises(Exception, match="global batch"):
        P.plan("llama-3.1-8b", "8xH100-80GB", TrainWorkload(1, 4096), global_batch=value)


def test_cli_global_batch_and_batch_together_exit_2():
    assert_user_error(run_cli("plan", "--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--train",
                              "--global-batch", "64", "--batch", "2"), "--global-batch", "not both")
    assert_user_error(run_cli("plan", "--infer", "--global-batch", "8"), "--global-batch")


def test_llama3_405b_published_layout_is_found(capsys):
    """Dubey et al. 2024 ("The Llama 3 Herd of Models") Table 4 row 1: 8,192 H100s, TP 8, PP 16, DP 64,
    seq 8192, 16M tokens a step (2,048 sequences), BF16 MFU 43%. With that global batch the top plan is at
    or above the published layout's estimated throughput, the published layout is in the top 5 and its
    estimated MFU is within 15% of 43%."""
    code = main(["plan", "--model", "llama-3.1-405b", "--hardware", "1024x8xH100-80GB", "--train", "--seq", "8192",
                 "--global-batch", "2048", "--precision", "bf16-mixed", "--top", "5", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    configs = doc["configs"]
    published = [c for c in configs if (c["knobs"]["tp"], c["knobs"]["pp"], c["data_parallel"]) == (8, 16, 64)]
    assert published, [(c["knobs"]["tp"], c["knobs"]["pp"], c["data_parallel"]) for c in configs]
    assert published[0]["time"]["mfu"] == pytest.approx(0.43, rel=0.15)
    reference = estimate(load_model_spec("llama-3.1-405b"),
                         RunConfig(TrainWorkload(1, 8192, 32), precision="bf16-mixed", tp=8, pp=16, pp_virtual=8, zero=2,
                                   sequence_parallel=True, pp_embedding_as_layer=True, fused_kernels=True),
                         parse_topology("1024x8xH100-80GB"))
    assert configs[0]["time"]["tokens_per_second"] >= reference.time.tokens_per_second * (1 - 1e-9)
    # what plan prints rebuilds the same estimate (the savers travel in run_config)
    top = RunConfig.from_dict(configs[0]["run_config"])
    again = estimate(load_model_spec("llama-3.1-405b"), top, parse_topology("1024x8xH100-80GB"))
    assert again.time.step_seconds == pytest.approx(configs[0]["time"]["step_seconds"], rel=1e-12)


def test_the_users_optimizer_is_kept_and_the_advice_says_what_else_would_fit():
    """Issue 14 item 7: llama-3.1-8b full fine-tune on one H100 at 4 x 4096. Without --allow-optimizer-change
    every ranked plan keeps AdamW; the advice puts numbers on the other ways (8-bit AdamW, Adafactor, LoRA,
    ZeRO-3 over more GPUs)."""
    result = P.plan("llama-3.1-8b", "H100-80GB", TrainWorkload(4, 4096), top=3)
    assert {est.knobs["optimizer"] for est in result.configs} <= {"adamw_torch", "adamw_torch_fused"}
    assert result.configs[0].knobs["offload"] != "none"  # AdamW fits one H100 only by offloading its states
    line = next(a for a in result.advice if a.startswith("Without CPU offload, estimated:"))
    for fragment in ("8-bit AdamW", "Adafactor", "LoRA r=16", "ZeRO-3 over", "GiB per device", "--allow-lora"):
        assert fragment in line, line
    lora = P.plan("llama-3.1-8b", "H100-80GB", TrainWorkload(4, 4096), top=1, lora_r=16,
                  lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    assert lora.configs[0].fits
