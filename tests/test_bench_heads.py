"""`bench --scenario train` trains the head the config names (issue 14 item 1): a classifier, a
token tagger, QA and multiple choice get the labels their loss expects, not a language-model head."""

from __future__ import annotations

import json

import pytest

from perfscale.config import RunConfig
from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.preflight import preflight
from perfscale.measure.scenarios import train
from perfscale.specs import TrainWorkload

BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 256, "max_position_embeddings": 64}


@pytest.mark.parametrize("architecture, extra", [
    ("BertForSequenceClassification", {"num_labels": 3}),
    ("BertForSequenceClassification", {"num_labels": 1}),  # regression
    ("BertForTokenClassification", {"num_labels": 5}),
    ("BertForQuestionAnswering", {}),
    ("BertForMultipleChoice", {}),
    ("BertForMaskedLM", {}),
])
def test_train_builds_and_steps_the_configs_head(architecture, extra, tmp_path):
    import transformers

    config = BERT | {"architectures": [architecture]} | extra
    (tmp_path / "config.json").write_text(json.dumps(config))
    bench = BenchConfig(scenario="train", model=str(tmp_path), run=RunConfig(workload=TrainWorkload(2, 16)))
    preflight(bench)  # the parent's checks accept the head
    scenario = train.setup(bench, "cpu")
    scenario.step()
    loss = scenario.iteration_metrics()["loss"]
    assert loss == loss and loss > 0  # a finite loss of that head
    cls = getattr(transformers, architecture)
    expected = sum(p.numel() for p in cls(transformers.AutoConfig.for_model(**config)).parameters())
    assert scenario.setup_metrics["trainable_params"] == expected  # the named head, not a masked-LM head
