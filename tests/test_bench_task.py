"""`bench --task` / `--num-labels` (issue 14 item 1): the training bench trains the head asked for, not the config's."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cli_helpers import assert_user_error, run_cli, run_json

FAST = ("--batch", "2", "--seq", "32", "--min-iters", "3", "--min-time", "0.5", "--max-time", "2", "--warmup", "1")


def test_bench_trains_a_sequence_classifier_of_a_causal_lm(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    doc = run_json("bench", "--model", "perfscale-tiny-llama", "--task", "sequence-classification", "--num-labels", "3",
                   *FAST, "--store", str(tmp_path / "r.sqlite"), env=env)
    row = doc["configurations"][0]
    assert row["status"] == "ok", row.get("reason")
    folder = Path(row["config"]["model"])
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 3
    assert config["pad_token_id"] is not None  # the head finds each row's last token by it (batch 2)
    assert folder.is_relative_to(tmp_path / "perfscale" / "heads")
    # 3 classes, random head: the cross-entropy starts near ln 3, far from a 32k-vocabulary LM's ln 32000
    assert abs(row["loss"]["first"] - math.log(3)) < 1.0, row["loss"]
    import torch
    import transformers

    from perfscale.specs import load_model_spec

    with torch.device("meta"):  # the same model with its causal-LM head, counted without allocating it
        lm = transformers.AutoModelForCausalLM.from_config(load_model_spec("perfscale-tiny-llama").config_object())
    hidden = config["hidden_size"]
    lm_params = sum(p.numel() for p in lm.parameters())
    # the classifier is the LM with its vocab-sized head swapped for a 3-way one (LlamaForSequenceClassification's
    # `score`, no bias)
    assert row["setup"]["trainable_params"] == lm_params - lm.lm_head.weight.numel() + 3 * hidden


def test_bench_task_bad_input():
    assert_user_error(run_cli("bench", "--task", "nope"), "Unknown task 'nope'", "sequence-classification")
    assert_user_error(run_cli("bench", "--scenario", "generate", "--task", "sequence-classification"), "use --scenario train")
    assert_user_error(run_cli("bench", "--model", "perfscale-tiny-llama", "--num-labels", "3"), "--task sequence-classification")
