"""Task heads: which head class a config's `architectures[0]` names, and which ones a family has.

A fine-tuned model is the family's base model plus a task head (transformers' `AutoModelFor<Task>`
classes). The head decides the labels of a training step and what the loss keeps alive: a causal
or masked LM head makes vocabulary-sized logits for every token (for a 150k vocabulary the largest
tensors of the step), a classifier head makes `num_labels` logits per sequence or per token.

The table of which families have which head is transformers' own (the `MODEL_FOR_<TASK>_MAPPING_NAMES`
dicts of `transformers.models.auto.modeling_auto`, model_type -> class name), so a family gains a
head when transformers adds it, without an edit here.
"""

from __future__ import annotations

from typing import Any

from perfscale.errors import ConfigFileError, UnsupportedModelError

# Task names (CLI `--task`) -> transformers' auto mapping of that head.
TASK_MAPPINGS = {
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "seq2seq-lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "question-answering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "multiple-choice": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
}
TASKS = tuple(TASK_MAPPINGS)
# The base model (BertModel, LlamaModel): no head; a traced step's loss is the mean of its output.
BASE = "base"
# Class-name suffixes of each head (used when a class is not the family's auto-mapped one, e.g. a
# config naming GPT2LMHeadModel or a head transformers maps under another task too).
_SUFFIXES = (
    ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"),
    ("ForConditionalGeneration", "seq2seq-lm"), ("ForSequenceClassification", "sequence-classification"),
    ("ForTokenClassification", "token-classification"), ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
)
# Heads whose logits span the vocabulary (the rest end in a small classifier).
LM_TASKS = ("causal-lm", "masked-lm", "seq2seq-lm")
# Heads whose size is `num_labels` (it must be known: the config's num_labels or id2label).
LABELLED_TASKS = ("sequence-classification", "token-classification")
# transformers' problem_type values for sequence classification (None: inferred from num_labels and
# the labels' dtype, modeling_utils / BertForSequenceClassification.forward).
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# Choices per example of a multiple-choice step: SWAG's 4 (the transformers multiple-choice example,
# examples/pytorch/multiple-choice/run_swag.py). A step of batch b runs b x 4 sequences.
MULTIPLE_CHOICES = 4


def task_of(architecture: str) -> str:
    """The task of a head class name (BertForSequenceClassification -> sequence-classification), or BASE."""
    for suffix, task in _SUFFIXES:
        if architecture.endswith(suffix):
            return task
    return BASE


def _mapping(task: str) -> dict[str, str]:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, TASK_MAPPINGS[task])


def family_tasks(model_type: str) -> list[str]:
    """The tasks transformers has a head class for in this family."""
    return [task for task in TASKS if model_type in _mapping(task)]


def head_class(model_type: str, task: str) -> str:
    """The transformers class of `task`'s head in this family; raises with the family's heads when it has none."""
    if task not in TASK_MAPPINGS:
        raise UnsupportedModelError(f"Unknown task {task!r}. Choose from: {', '.join(TASKS)}.")
    name = _mapping(task).get(model_type)
    if name is None:
        have = family_tasks(model_type)
        raise UnsupportedModelError(
            f"The {model_type} family has no {task} head in transformers. Its heads: {', '.join(have) or 'none'}. "
            "Pass --task with one of these (or leave --task out to use the config's architectures[0])."
        )
    return name


def num_labels(config: dict[str, Any]) -> int | None:
    """The classifier's size as from_pretrained reads it: num_labels, else the length of id2label."""
    value = config.get("num_labels")
    if value is None and isinstance(config.get("id2label"), dict):
        value = len(config["id2label"])
    return value


def check_head(config: dict[str, Any], task: str, location: str) -> None:
    """num_labels and problem_type where the head needs them: all problems at once."""
    problems = []
    labels = num_labels(config)
    if task in LABELLED_TASKS:
        if labels is None:
            problems.append(f"a {task} head needs num_labels (or id2label), which the config does not give "
                            "(transformers would silently build 2)")
        elif not isinstance(labels, int) or isinstance(labels, bool) or not 1 <= labels <= 2**20:
            problems.append(f"num_labels must be an integer from 1 to {2**20:,}, got {labels!r}")
    problem = config.get("problem_type")
    if problem is not None and problem not in PROBLEM_TYPES:
        problems.append(f"problem_type {problem!r} is not one of: {', '.join(PROBLEM_TYPES)}")
    if problem is not None and task != "sequence-classification":
        problems.append(f"problem_type {problem!r} applies to sequence-classification heads, not {task}")
    if problems:
        raise ConfigFileError(f"Model config {location}: " + "; ".join(problems)
                              + ". Give --num-labels N (and a valid problem_type in the config), or another --task.")


def problem_type(config: dict[str, Any]) -> str:
    """The sequence-classification loss transformers picks: the config's problem_type, else
    regression for one label and single-label classification (integer labels) for more."""
    given = config.get("problem_type")
    if given:
        return given
    return "regression" if num_labels(config) == 1 else "single_label_classification"


__all__ = [
    "BASE", "LABELLED_TASKS", "LM_TASKS", "MULTIPLE_CHOICES", "PROBLEM_TYPES", "TASKS", "check_head", "family_tasks",
    "head_class", "num_labels", "problem_type", "task_of",
]
