"""DeepSpeed ZeRO through accelerate under torchrun (issue 18: `bench --nproc N --strategy deepspeed --zero S`).

DeepSpeed is the optional extra perfscale[deepspeed] (not in the test extra: the training test takes ~170 s on
2 cores): the refusals are tested always, the "not installed" message where it is missing; the training runs
where deepspeed is importable, on gloo with DeepSpeed's CPU accelerator.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from perfscale.errors import InvalidConfigError
from perfscale.cli.inline_config import parse_inline
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.stats import StopRule

from cli_helpers import assert_user_error, run_cli

HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def test_zero_is_measured_by_deepspeed_only():
    base = BenchConfig(run=parse_inline("batch=2,seq=32", BenchConfig()).run)
    with pytest.raises(InvalidConfigError, match="add --strategy deepspeed"):
        parse_inline("zero=2,nproc=2", base)  # DDP with a ZeRO stage: not a layout anything runs
    with pytest.raises(InvalidConfigError, match="no model to shard"):
        BenchConfig(scenario="selftest", nproc=2, strategy="deepspeed")
    if HAVE_DEEPSPEED:
        two = parse_inline("strategy=deepspeed,zero=3,nproc=2", base)
        assert (two.strategy, two.run.zero, two.world_size) == ("deepspeed", 3, 2) and "zero3x2" in two.display
        assert two.fingerprint() != parse_inline("strategy=deepspeed,zero=2,nproc=2", base).fingerprint()
    else:
        with pytest.raises(InvalidConfigError, match=r"pip install 'perfscale\[deepspeed\]'"):
            parse_inline("strategy=deepspeed,zero=2,nproc=2", base)


def test_cli_refuses_zero_without_deepspeed_strategy():
    base = ("bench", "--model", "perfscale-tiny-llama", "--batch", "2", "--seq", "32")
    assert_user_error(run_cli(*base, "--zero", "2"), "add --strategy deepspeed")
    assert_user_error(run_cli(*base, "--nproc", "2", "--strategy", "deepspeed", "--zero", "4"), "zero")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DEEPSPEED, reason="deepspeed is not installed: pip install 'perfscale[deepspeed]'")
def test_zero3_trains_the_tiny_llama_on_two_ranks(tmp_path):
    """Two ranks on gloo, ZeRO-3 (DeepSpeed's CPU accelerator): it trains (the loss goes down), every rank
    reports its time, memory and collectives, and the parameters are gathered (all_gather)."""
    from perfscale.measure.runner import measure

    config = parse_inline("batch=2,seq=32,strategy=deepspeed,zero=3,nproc=2", BenchConfig())
    opts = MeasureOptions(stop=StopRule(min_iters=6, min_time=0.5, max_time=4.0), warmup=1, gate=False)
    r = measure(config, opts, workdir=str(tmp_path))
    assert r.ok, (r.reason, r.stderr_tail)
    assert r.tokens_per_iter == 2 * 2 * 32 and len(r.ranks) == 2
    assert all(row["tokens_per_s"] > 0 and row["peak_live_tensor_bytes"] > 0 and row["comm_s"] > 0 for row in r.ranks)
    assert any("DeepSpeed ZeRO stage 3" in n for n in r.notes), r.notes
    loss = r.loss()
    assert loss["last"] < loss["first"], loss
    assert r.ranks[0]["comm_ops"].get("gloo:all_gather", {}).get("count", 0) > 0, r.ranks[0]["comm_ops"]
    json.dumps(r.to_dict())
