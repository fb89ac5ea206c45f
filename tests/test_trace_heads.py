"""Task heads (issue 14 item 1): every head class of the covered families traces with the labels its
loss expects, the estimate models its memory (a classifier has no vocabulary-sized logits), and bad
heads are user errors. Tiny configs (hidden 256, vocab 2048): about half a second per trace."""

from __future__ import annotations

import json

import pytest

from perfscale import trace as trace_api
from perfscale.cli.app import main
from perfscale.config import RunConfig
from perfscale.errors import ConfigFileError, UnsupportedModelError
from perfscale.estimate import estimate
from perfscale.specs import TrainWorkload, heads, load_model_spec, parse_topology
from perfscale.specs.config_file import ConfigSource
from perfscale.specs.model import spec_from_source, with_head
from tiny_configs import tiny_config

H100 = parse_topology("H100-80GB")
_DEC = dict(hidden_size=256, intermediate_size=512, vocab_size=2048)
_ENC = dict(hidden_size=256, intermediate_size=1024, vocab_size=2048)
SIZES = {"llama": _DEC, "qwen2": _DEC, "phi3": _DEC, "bert": _ENC, "roberta": _ENC,
         "gpt2": dict(n_embd=256, vocab_size=2048, n_positions=512),
         "gpt_neox": dict(hidden_size=256, intermediate_size=1024, vocab_size=2048),
         "opt": dict(hidden_size=256, ffn_dim=1024, word_embed_proj_dim=256, vocab_size=2048, max_position_embeddings=512),
         "falcon": dict(hidden_size=256, vocab_size=2048)}


def head_spec(family: str, task: str, num_labels: int | None = None, **config):
    src = ConfigSource(name=f"{family}-{task}", kind="local", location=f"<{family}>",
                       config=tiny_config(family, **SIZES[family], **config))
    labels = num_labels if num_labels is not None else (5 if task in heads.LABELLED_TASKS else None)
    return spec_from_source(with_head(src, task, labels))


# Heads of every kind across families. Each traced head is estimated within 3% (measured on every head of
# the 9 families at b4 s128: LM heads within 0.1%, classifier heads -2.5% .. +0.1%, except GPT-2's
# classifiers at -4.2%: the in-layer backward peak of its Python gelu_new is not modelled; T5's heads
# keep llama's recipe, +11..+20%, and T5ForSequenceClassification needs tensor values, a user error).
HEAD_CASES = [("llama", "causal-lm", {}), ("llama", "sequence-classification", {}), ("bert", "masked-lm", {}),
              ("bert", "sequence-classification", {}), ("bert", "question-answering", {}), ("bert", "multiple-choice", {}),
              ("qwen2", "question-answering", dict(precision="bf16-mixed")), ("falcon", "token-classification", {}),
              ("gpt_neox", "sequence-classification", dict(attn="eager")), ("roberta", "masked-lm", dict(precision="bf16"))]


@pytest.mark.parametrize("family,task,knobs", HEAD_CASES, ids=[f"{f}-{t}" for f, t, _ in HEAD_CASES])
def test_head_traces_and_estimate_matches(family, task, knobs):
    spec = head_spec(family, task)
    assert spec.task == task and spec.architecture == heads.head_class(spec.model_type, task)
    run = RunConfig(TrainWorkload(4, 128), optimizer="sgd" if knobs.get("precision") == "bf16" else "adamw_torch_fused", **knobs)
    traced = trace_api.trace(spec, run)
    assert any(note.startswith(f"head: {spec.architecture}") for note in traced.notes)
    assert traced.to_dict()["task"] == task
    est = estimate(spec, run, H100).memory.peak_bytes
    assert abs(est - traced.peak_bytes) <= 0.03 * traced.peak_bytes, (est, traced.peak_bytes)


def test_classifier_has_no_vocabulary_logits():
    """The same body with an LM head and with a classifier: the trace's difference is the logits and
    their loss (fp32 vocab x tokens, several copies), which the estimate reproduces within 8% (measured
    +5.6% of the difference; each peak within 0.1%)."""
    run = RunConfig(TrainWorkload(8, 128))
    lm, cls = head_spec("llama", "causal-lm"), head_spec("llama", "sequence-classification", num_labels=3)
    traced = trace_api.trace(lm, run).peak_bytes - trace_api.trace(cls, run).peak_bytes
    estimated = estimate(lm, run, H100).memory.peak_bytes - estimate(cls, run, H100).memory.peak_bytes
    assert traced > 8 * 128 * 2048 * 8  # at least two fp32 vocab x tokens tensors
    assert abs(estimated - traced) <= 0.08 * traced, (estimated, traced)
    # time: a classifier skips the vocabulary projection (2 x vocab x hidden FLOPs per token)
    # (an explicit efficiency: this tiny model's default GPU step is bound by the host's dispatch, the same for both)
    assert estimate(cls, run, H100, efficiency=0.45).time.step_seconds < estimate(lm, run, H100, efficiency=0.45).time.step_seconds
    gpu = {name: estimate(spec, run, H100).time for name, spec in (("lm", lm), ("cls", cls))}
    assert gpu["cls"].efficiency < gpu["lm"].efficiency  # same step (host-bound), fewer FLOPs done in it


@pytest.mark.parametrize("problem,num_labels", [("regression", 1), ("multi_label_classification", 4),
                                                 ("single_label_classification", 3), (None, 1)])
def test_sequence_classification_losses(problem, num_labels):
    """Each problem_type gets the labels its loss expects (MSE, BCE-with-logits, cross-entropy); a wrong
    label shape or dtype would fail inside the model code."""
    extra = {"problem_type": problem} if problem else {}
    spec = head_spec("bert", "sequence-classification", num_labels=num_labels, **extra)
    assert heads.problem_type(spec.config) == (problem or "regression")
    assert trace_api.trace(spec, RunConfig(TrainWorkload(2, 32))).peak_bytes > 0


def test_multiple_choice_runs_choices_per_example():
    spec = head_spec("bert", "multiple-choice")
    one = trace_api.trace(spec, RunConfig(TrainWorkload(2, 64)))
    plain = trace_api.trace(head_spec("bert", "sequence-classification", num_labels=2), RunConfig(TrainWorkload(2 * heads.MULTIPLE_CHOICES, 64)))
    # b examples of 4 choices carry the activations of 4b sequences (the heads differ by a few kB)
    assert abs(one.peak_bytes - plain.peak_bytes) <= 0.01 * plain.peak_bytes
    # and their time: the estimate's step of b examples is that of 4b sequences
    mc_time = estimate(spec, RunConfig(TrainWorkload(2, 64)), H100).time.step_seconds
    cls = head_spec("bert", "sequence-classification", num_labels=2)
    cls_time = estimate(cls, RunConfig(TrainWorkload(2 * heads.MULTIPLE_CHOICES, 64)), H100).time.step_seconds
    assert mc_time == pytest.approx(cls_time, rel=0.01)


def test_catalogue_entries_say_their_head():
    spec = load_model_spec("bert-base-uncased")
    assert spec.to_dict()["task"] == "masked-lm" and spec.architecture == "BertForMaskedLM"
    assert load_model_spec("llama-3.2-1b").to_dict()["task"] == "causal-lm"
    cls = load_model_spec("bert-base-uncased", task="sequence-classification", num_labels=3)
    assert cls.architecture == "BertForSequenceClassification" and cls.num_labels == 3
    assert cls.params.lm_head == 0 and cls.params.total < spec.params.total  # no vocab projection
    assert cls.published_params is None  # the published count is of the published head


def test_bad_heads_are_user_errors():
    with pytest.raises(UnsupportedModelError, match="no multiple-choice head.*causal-lm, sequence-classification"):
        load_model_spec("llama-3.2-1b", task="multiple-choice")
    with pytest.raises(UnsupportedModelError, match="Unknown task 'sentiment'. Choose from: causal-lm"):
        load_model_spec("llama-3.2-1b", task="sentiment")
    with pytest.raises(ConfigFileError, match="needs num_labels.*--num-labels"):
        load_model_spec("bert-base-uncased", task="token-classification")
    with pytest.raises(ConfigFileError, match="num_labels 3 applies to sequence- or token-classification"):
        load_model_spec("bert-base-uncased", num_labels=3)
    with pytest.raises(ConfigFileError, match="num_labels must be an integer from 1"):
        load_model_spec("bert-base-uncased", task="sequence-classification", num_labels=0)
    with pytest.raises(ConfigFileError, match="problem_type 'ordinal' is not one of: regression"):
        head_spec("bert", "sequence-classification", problem_type="ordinal")


def _model_dir(tmp_path, config: dict) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_cli_task_and_num_labels(capsys, tmp_path):
    """The issue's crash: a BertForSequenceClassification config traced with token labels."""
    config = tiny_config("bert", architectures=["BertForSequenceClassification"], id2label={"0": "neg", "1": "pos"})
    model = _model_dir(tmp_path, config)
    assert main(["trace", "--model", model, "--batch", "4", "--seq", "64", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["architecture"] == "BertForSequenceClassification" and doc["peak_bytes"] > 0
    assert main(["trace", "--model", model, "--task", "token-classification", "--num-labels", "9", "--batch", "2",
                 "--seq", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "token-classification"
    assert main(["plan", "--model", model, "--task", "question-answering", "--hardware", "H100-80GB", "--batch", "4",
                 "--seq", "128", "--top", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["configs"]
    assert main(["trace", "--model", model, "--task", "seq2seq-lm", "--json"]) == 2
    assert "no seq2seq-lm head" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_infer_trace_takes_every_causal_lm_head():
    """GPT2LMHeadModel is a causal LM (its class name does not end in ForCausalLM): trace --infer runs it;
    a classifier has no generation to trace (a user error naming plan)."""
    from perfscale.specs import InferWorkload, spec_from_config

    gpt2 = spec_from_config(tiny_config("gpt2"), "gpt2-infer")
    assert trace_api.trace(gpt2, RunConfig(InferWorkload(2, 16, 4))).kv_cache_bytes > 0
    with pytest.raises(UnsupportedModelError, match="causal LMs with a KV cache"):
        trace_api.trace(head_spec("bert", "sequence-classification"), RunConfig(InferWorkload(2, 16, 4)))
