"""The three scenarios end to end in fresh processes, on tiny models, with tiny stop rules."""

from __future__ import annotations

import json

import pytest

from perfscale.config.run_config import RunConfig
from perfscale.measure.bench_config import BenchConfig, GateThresholds, MeasureOptions
from perfscale.measure.corpus import load_sentences
from perfscale.measure.runner import measure
from perfscale.measure.stats import StopRule
from perfscale.specs.workload import InferWorkload

from cli_helpers import run_json
from tiny_configs import tiny_config

STOP = StopRule(min_iters=3, min_time=0.2, max_time=2.0)
FAST = MeasureOptions(stop=STOP, warmup=1)


def _tiny_llama_dir(tmp_path):
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_config("llama")))
    return str(d)


def _check_timing(r, dtype="fp32"):
    assert r.status == "ok", (r.reason, r.stderr_tail)
    assert len(r.samples) >= STOP.min_iters and all(s > 0 for s in r.samples)
    assert r.stop_reason in ("converged", "time_cap", "iteration_cap")
    h = r.headline()
    assert h["ci_low"] <= h["median"] <= h["ci_high"]
    assert r.warmup_s and r.load_s > 0
    env = r.environment
    assert env["packages"]["torch"] and env["cpu"]["model"] and "torch_intra_op" in env["threads"]
    assert r.mfu["dtype"] == dtype and r.mfu["flops_per_iter"] > 0
    if r.mfu["peak_flops"]:
        assert 0 < r.mfu["value"] < 1.5
    else:
        assert r.mfu["value"] is None


def test_corpus_is_real_sentences_with_spread_lengths():
    s = load_sentences()
    assert 500 <= len(s) <= 2000 and len(set(s)) == len(s)
    words = sorted(len(x.split()) for x in s)
    assert words[len(words) // 10] < words[len(words) // 2] < words[9 * len(words) // 10]  # a real spread
    assert all(x[0].isupper() and x[-1] in ".!?" for x in s)
    assert load_sentences(len(s) + 3)[-1] == s[2]


def test_generate_latency_and_gate(tmp_path):
    model = _tiny_llama_dir(tmp_path)
    wl = InferWorkload(batch=1, prompt=16, new_tokens=8)
    # bf16 logits differ from fp32: a zero tolerance must flag the variant inaccurate (the gate really
    # runs the fp32 eager reference in its own process and compares).
    strict = MeasureOptions(stop=STOP, warmup=1, thresholds=GateThresholds(max_abs_logit_diff=0.0))
    r = measure(BenchConfig(scenario="generate", model=model, run=RunConfig(workload=wl, precision="bf16")), strict)
    assert r.status == "inaccurate", (r.reason, r.stderr_tail)
    assert r.accuracy["kind"] == "logits" and r.accuracy["max_abs_logit_diff"] > 0 and 0 <= r.accuracy["top1_agreement"] <= 1
    assert "max |logit diff|" in r.reason
    r.status = "ok"  # timed all the same: check the timing fields
    _check_timing(r, dtype="bf16")
    assert r.tokens_per_iter == 8
    lat = r.latency()
    assert 0 < lat["ttft"]["median"] < r.time_summary().median
    assert 0 < lat["tpot"]["median"] < r.time_summary().median


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A 2-layer BERT with a word-level vocabulary from the corpus: a sentence-transformers-like folder."""
    import torch
    import transformers

    d = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w.strip(".,;:()\"'").lower() for s in load_sentences() for w in s.split()} - {""})[:400]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w in words if w.isalpha()]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    tok.save_pretrained(d)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(d)
    return str(d)


def test_encode_eager_is_its_own_reference(tiny_encoder):
    cfg = BenchConfig(scenario="encode", model=tiny_encoder, run=RunConfig(workload=InferWorkload(batch=8, prompt=64)), sentences=32)
    r = measure(cfg, FAST)
    _check_timing(r)
    assert r.samples_per_iter == 32 and r.setup["tokens"] == r.tokens_per_iter > 32
    assert r.accuracy["reference"] is True
    assert r.headline()["unit"] == "sentences/s"


@pytest.mark.slow
def test_encode_onnxruntime_int8_is_gated(tiny_encoder, tmp_path):
    """int8 really runs, the gate compares its embeddings with fp32 eager's, and the verdict is the status."""
    import onnx

    wl = RunConfig(workload=InferWorkload(batch=8, prompt=64))
    cfg = BenchConfig(scenario="encode", model=tiny_encoder, run=wl, sentences=32, runtime="onnxruntime",
                      encoder_quantization="int8-dynamic", extra={"onnx_cache_dir": str(tmp_path / "onnx")})
    work = tmp_path / "work"  # shared by both runs: the fp32 eager reference outputs are computed once
    work.mkdir()
    r = measure(cfg, FAST, workdir=work)
    (int8_file,) = (tmp_path / "onnx").rglob("*int8-dynamic.onnx")
    ops = [n.op_type for n in onnx.load(str(int8_file), load_external_data=False).graph.node]
    assert ops.count("MatMulInteger") == 12  # 2 layers x (q, k, v, o, up, down) run in int8
    acc = r.accuracy
    assert acc and acc.get("reference") is None, (r.status, r.reason, r.stderr_tail)  # gated, not its own reference
    assert acc["kind"] == "embeddings" and acc["n"] == 32 and -1 <= acc["min_cosine"] <= acc["mean_cosine"] <= 1 + 1e-6
    default = GateThresholds()
    assert acc["passed"] == (acc["mean_cosine"] >= default.min_mean_cosine and acc["min_cosine"] >= default.min_min_cosine)
    # This random-init BERT (weights ~N(0, 0.02)) is dominated by its residual stream: int8 keeps cosine ~1 - 1e-8.
    assert acc["passed"] and r.status == "ok", (r.reason, r.stderr_tail)
    assert r.memory["peak_live_tensor_bytes"] is None and r.memory["cpu_peak_rss"] > 0  # ORT arena: RSS only
    assert r.mfu["dtype"] == "int8"
    # A gate no variant can meet rejects it: the status is "inaccurate" and the reason names the cosine missed.
    strict = measure(cfg, MeasureOptions(stop=STOP, warmup=1, thresholds=GateThresholds(min_mean_cosine=1.01)), workdir=work)
    assert strict.status == "inaccurate" and strict.accuracy["passed"] is False, (strict.reason, strict.stderr_tail)
    assert "mean cosine" in strict.reason and "1.01" in strict.reason


def test_bench_cli_train_json_document(tmp_path):
    """`perfscale bench --scenario train --json`: one document with the headline numbers, memory and MFU."""
    store = tmp_path / "r.sqlite"
    save = tmp_path / "cfg.json"
    doc = run_json("bench", "--scenario", "train", "--model", _tiny_llama_dir(tmp_path), "--batch", "2", "--seq", "32",
                   "--optimizer", "sgd", "--min-iters", "3", "--min-time", "0.2", "--max-time", "2", "--warmup", "1",
                   "--store", str(store), "--save-config", str(save), "--label", "cli-run", "--tf32")
    (conf,) = doc["configurations"]
    assert conf["status"] == "ok" and conf["label"] == "cli-run" and conf["unit"] == "tokens/s"
    assert conf["ci_low"] <= conf["median"] <= conf["ci_high"]
    assert conf["median"] == pytest.approx(64 / conf["time_per_iter"]["median"])
    assert conf["tokens_per_iter"] == 64 and conf["samples_per_iter"] == 2
    mem = conf["memory"]
    assert conf["peak_memory_bytes"] == mem["cpu_peak_rss"] > mem["peak_live_tensor_bytes"] > 0
    assert conf["mfu"]["dtype"] == "fp32" and conf["mfu"]["flops_per_iter"] > 0
    assert conf["accuracy"] is None  # no gate for training
    assert conf["environment"]["packages"]["transformers"] and conf["store_id"] == 1
    assert json.loads(save.read_text())["label"] == "cli-run"
    assert doc["store"] == str(store)
    # --tf32 reaches the worker, as TrainingArguments(tf32=True) sets it (CUDA's flag; no effect on this CPU run)
    assert conf["environment"]["allow_tf32"] == {"cuda_matmul": True, "cudnn": True}


def test_a_local_folder_with_weights_is_measured_with_them(tmp_path):
    """bench --model ./folder loads the folder's weights (its location is the config.json beside them),
    not random ones; a catalogue name builds random weights from the config."""
    import torch
    import transformers

    from perfscale.config.precision import Precision
    from perfscale.measure.scenarios.common import build_lm

    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=2, vocab_size=128)
    torch.manual_seed(123)
    saved = transformers.LlamaForCausalLM(cfg)
    saved.save_pretrained(tmp_path)
    _, loaded = build_lm(str(tmp_path), "train", Precision.of("fp32"), "sdpa", "cpu", seed=0)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    _, built = build_lm("perfscale-tiny-llama", "train", Precision.of("fp32"), "sdpa", "cpu", seed=0)
    _, again = build_lm("perfscale-tiny-llama", "train", Precision.of("fp32"), "sdpa", "cpu", seed=0)
    assert torch.equal(built.model.embed_tokens.weight, again.model.embed_tokens.weight)  # seeded random weights
