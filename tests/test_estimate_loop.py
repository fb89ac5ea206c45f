"""The training loop's program as a knob (issue 14 item 4): the Trainer frees the model outputs before
backward, a custom loop that keeps `outputs` holds the logits through backward and the optimizer step
(and into the next forward). Trace and estimate of both, and the advice that says when it matters."""

from __future__ import annotations

import pytest

from perfscale import trace as trace_api
from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.estimate import estimate
from perfscale.specs import TrainWorkload, parse_topology, spec_from_config
from tiny_configs import tiny_config

H100 = parse_topology("H100-80GB")
LM = spec_from_config(tiny_config("qwen2", hidden_size=256, intermediate_size=512, vocab_size=8192), "qwen2-loop")


@pytest.mark.parametrize("knobs", [dict(), dict(precision="bf16-mixed", checkpointing=True)])
def test_custom_loop_keeps_the_logits(knobs):
    peaks = {}
    for loop in ("trainer", "custom"):
        run = RunConfig(TrainWorkload(4, 128), loop=loop, **knobs)
        peaks[loop] = (trace_api.trace(LM, run).peak_bytes, estimate(LM, run, H100).memory.peak_bytes)
    (t_trainer, e_trainer), (t_custom, e_custom) = peaks["trainer"], peaks["custom"]
    logits = 4 * 128 * 8192 * (2 if knobs else 4)  # b x s x vocab in the head's output dtype
    assert abs((t_custom - t_trainer) - logits) <= 0.01 * logits  # the trace keeps exactly the logits
    assert abs(e_custom - t_custom) <= 0.01 * t_custom and abs(e_trainer - t_trainer) <= 0.01 * t_trainer


def test_loop_advice_and_validation():
    run = RunConfig(TrainWorkload(4, 128), loop="custom")
    notes = estimate(LM, run, H100).notes
    assert any("loop custom: keeping `outputs` holds the logits" in n and "del outputs" in n for n in notes)
    assert any("--loop custom" in n for n in estimate(LM, RunConfig(TrainWorkload(4, 128)), H100).notes)
    classifier = spec_from_config(tiny_config("qwen2", architectures=["Qwen2ForSequenceClassification"], num_labels=2), "q-cls")
    assert not any("loop" in n for n in estimate(classifier, run, H100).notes)  # no vocabulary logits to keep
    with pytest.raises(InvalidConfigError, match="loop 'keras' is not one of: trainer, custom"):
        RunConfig(TrainWorkload(1, 8), loop="keras")
