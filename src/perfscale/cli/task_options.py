"""`--task` and `--num-labels`: the head a model is built with (trace and plan), over specs/heads.py."""

from __future__ import annotations

import typer

from perfscale.specs.heads import TASKS

TASK = typer.Option(
    None, "--task",
    help=f"The head to build instead of the config's architectures[0]: {' | '.join(TASKS)}. "
    "Classification heads need --num-labels when the config has no num_labels / id2label.",
)
NUM_LABELS = typer.Option(None, "--num-labels", help="Outputs of a sequence- or token-classification head (the number of classes).")


def model_or_spec(model: str, task: str | None, num_labels: int | None):
    """The model name itself when no head is asked for (the engines load it), else its ModelSpec with that head."""
    if task is None and num_labels is None:
        return model
    from perfscale.specs import load_model_spec

    return load_model_spec(model, task=task, num_labels=num_labels)
