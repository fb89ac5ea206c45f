"""Context parallelism (RunConfig.cp, issue 14 item 6): validation, layout rules, memory by hand, the search
at long sequences, and the accelerate config that carries it (or a clear refusal)."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError, TopologyError
from perfscale.estimate import estimate
from perfscale.estimate.core import constants_for, layout_problems
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.memory import PRECISION_BYTES, backward_temporaries, ring_buffers, train_memory
from perfscale.specs import load_model_spec, parse_topology
from perfscale.specs.workload import TrainWorkload
from perfscale.tune import space
from perfscale.tune.plan import plan

LONG = 131072  # Llama 3 405B's long-context stage: cp 16 at 131,072 tokens (Dubey et al. 2024, section 3.3.2)


@pytest.fixture(scope="module")
def llama8b():
    return load_model_spec("llama-3.1-8b")


def test_run_config_validates_cp():
    assert RunConfig(TrainWorkload(1, 16), cp=2).cp == 2
    with pytest.raises(InvalidConfigError) as info:
        RunConfig(TrainWorkload(1, 18), cp=2, attn="eager")
    message = str(info.value)
    assert "seq 18 is not a multiple of 4" in message and "use seq 20 or 16" in message  # both problems at once
    assert "needs attn sdpa" in message
    with pytest.raises(InvalidConfigError, match="cp must be an integer >= 1"):
        RunConfig(TrainWorkload(1, 16), cp=0)
    assert "cp" not in RunConfig(TrainWorkload(1, 16)).to_dict()  # old documents and fingerprints unchanged


def test_layout_rules(llama8b):
    mc = constants_for(llama8b)
    assert layout_problems(mc, Knobs(seq=LONG, tp=8, cp=16), 128) == []
    (problem,) = layout_problems(mc, Knobs(seq=LONG, tp=8, cp=3), 24)
    assert "2 x cp = 6 chunks" in problem
    (problem,) = layout_problems(mc, Knobs(seq=LONG, tp=4, pp=2, cp=2), 8)
    assert "tp x pp x cp = 4 x 2 x 2 = 16 does not divide the world size 8" in problem
    # FSDP shards over data parallel x cp: fsdp 8 over cp 8 on 8 devices is one shard group
    assert layout_problems(mc, Knobs(seq=LONG, cp=8, fsdp=8), 8) == []
    with pytest.raises(TopologyError, match="does not divide the world size 8"):
        estimate(llama8b, RunConfig(TrainWorkload(1, LONG), cp=16), parse_topology("8xH100-80GB"))
    est = estimate(llama8b, RunConfig(TrainWorkload(1, LONG), cp=4, fsdp=8, precision="bf16-mixed", checkpointing=True),
                   parse_topology("8xH100-80GB"))
    assert est.data_parallel == 2 and est.knobs["cp"] == 4 and est.run_config["cp"] == 4


def test_memory_by_hand(llama8b):
    """bf16 weights, checkpointing, FSDP 8 on 8 GPUs, one 131,072-token sequence over cp 8: each rank holds
    16,384 tokens of it, so every activation is that of a 16,384-token sequence, computed here by hand."""
    mc = constants_for(llama8b)
    k = Knobs(precision="bf16", optimizer="sgd", checkpointing=True, batch=1, seq=LONG, cp=8, fsdp=8)
    mem = train_memory(mc, k, 8)
    local = LONG // 8
    h, vocab, layers = 4096, 128256, 32
    assert (mc.h, mc.vocab, mc.layers, mc.kv) == (h, vocab, layers, 1024)
    saved = layers * 2 * h * local + 2 * 2 * 128 * local  # each layer's bf16 input; RoPE cos + sin (head_dim 128, bf16)
    head = (mc.head_rep["bf16"] + 4 * vocab + 8) * local  # final norm, fp32 log-softmax, int64 labels
    assert mem["phase"] == "backward"
    assert mem["breakdown"]["activations"] == saved + head == 13_245_808_640
    # the loss's backward: two fp32 vocab-wide gradients less the labels; one FSDP unit's bf16 gradients
    assert mem["breakdown"]["temporaries"] == (2 * 4 * vocab - 8) * local + mc.params_layer * 2
    # ... the same numbers as a 16,384-token sequence without context parallelism (sdpa keeps no s^2 terms)
    assert train_memory(mc, k.copy(seq=local, cp=1), 8) == mem
    # the ring's buffers in a layer's backward: 2 blocks x (K, V, dK, dV) x 16,384 tokens x 1,024 x bf16
    assert ring_buffers(mc, k, local, 2) == 2 * 4 * local * 1024 * 2 == 268_435_456
    _p, sb, cb = PRECISION_BYTES["bf16"]
    with_ring = backward_temporaries(mc, k, True, local, sb, cb, 2, 8)[0]
    assert with_ring - backward_temporaries(mc, k.copy(cp=1), True, local, sb, cb, 2, 8)[0] == 268_435_456


def test_cp_is_searched_only_for_long_sequences():
    assert space.cp_choices(8192, 8) == [1]  # Llama 3's 8K pretraining ran without CP
    assert space.cp_choices(16384, 8) == [1, 2]
    assert space.cp_choices(LONG, 8) == [1, 2, 4, 8]
    assert space.cp_choices(LONG, 32) == [1, 2, 4, 8, 16]  # 8,192 tokens a rank at most: Llama 3's cp 16
    assert space.cp_choices(LONG, 6) == [1, 2]  # 3 and 6 do not split 131,072 into 2 cp chunks
    short = {lay["cp"] for lay in space.parallel_layouts(8, 8, 32, 32, seq=8192)}
    long_ = {lay["cp"] for lay in space.parallel_layouts(8, 8, 32, 32, seq=LONG)}
    assert short == {1} and long_ == {1, 2, 4, 8}


def test_plan_at_131k_finds_cp_layouts_that_fit_where_cp1_does_not(llama8b):
    """llama-3.1-8b, one 131,072-token sequence on 8 x H100 without tensor or pipeline parallelism: no
    cp 1 configuration fits (its logits alone are > 60 GB); context parallelism splits them and fits."""
    wl = TrainWorkload(1, LONG)
    with pytest.raises(InvalidConfigError, match="No configuration of llama-3.1-8b fits"):
        plan(llama8b, "8xH100-80GB", wl, tp=1, pp=1, cp=1)
    result = plan(llama8b, "8xH100-80GB", wl, tp=1, pp=1, top=5)
    assert result.configs and all(c.fits and c.knobs["cp"] > 1 for c in result.configs)
    assert "cp" in result.open_knobs
    opened = plan(llama8b, "8xH100-80GB", wl, top=20)
    assert any(c.knobs["cp"] > 1 for c in opened.configs)


def test_accelerate_config_carries_cp_or_refuses(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    from perfscale.export import emit_files
    from perfscale.export.launch import layout_of_accelerate

    topo = parse_topology("2x8xH100-80GB")
    config = RunConfig(TrainWorkload(1, LONG), cp=4, fsdp=8, precision="bf16-mixed", checkpointing=True)
    emit_files(config, topo, tmp_path, ("accelerate",), "m")
    loaded = load_config_from_file(str(tmp_path / "accelerate_config.yaml"))
    layout = layout_of_accelerate(loaded)
    assert (layout["cp"], layout["fsdp"], layout["tp"]) == (4, 8, 1)
    assert loaded.parallelism_config["parallelism_config_dp_replicate_size"] == 2  # 16 / (fsdp 8)
    for bad in ({"cp": 2, "zero": 3}, {"cp": 2}, {"cp": 4, "fsdp": 2}, {"cp": 4, "fsdp": 4}):
        with pytest.raises(InvalidConfigError, match="context parallel .cp [0-9]+. runs under accelerate only on FSDP2"):
            emit_files(RunConfig(TrainWorkload(1, LONG), **bad), topo, tmp_path, ("accelerate",), "m")
    with pytest.raises(InvalidConfigError, match="cp 4. has no DeepSpeed config key"):
        emit_files(config, topo, tmp_path, ("deepspeed",), "m")
