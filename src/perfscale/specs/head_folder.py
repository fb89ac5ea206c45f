"""A model with another task head, as a folder the measuring processes can load (`--task` in bench, compare, tune).

The measured runs build a model by its name in a fresh process (measure/scenarios/common.build_lm). A head asked
for with `--task` / `--num-labels` is a different config (architectures[0], num_labels), so it is written once as
a config.json in the user cache, in a folder named by the model, the task and the config's hash: the same
question gives the same folder (so the same fingerprints, and tune's --resume finds its trials). The folder holds
no weights: the runs build the model from its config with random weights, as for a catalogue model.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

from perfscale.specs import heads
from perfscale.user_cache import user_cache_dir


def trainable_config(config: dict) -> dict:
    """The config as a fine-tuning script trains it: transformers' sequence-classification heads find each row's
    last token by the pad token and refuse a batch > 1 without one, and decoder configs (Llama, Qwen2) have none;
    the scripts set `model.config.pad_token_id = tokenizer.eos_token_id` (transformers' text-classification
    example), so this does too."""
    config = dict(config)
    arch = str((config.get("architectures") or [""])[0])
    if config.get("pad_token_id") is None and heads.task_of(arch) == "sequence-classification":
        eos = config.get("eos_token_id")
        config["pad_token_id"] = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
    return config


def head_folder(spec) -> str:
    """The folder holding `spec`'s config with its head (see the module docstring); written atomically."""
    config = trainable_config(spec.config)
    text = json.dumps(config, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{spec.name}-{spec.task}")[-80:].strip("-.") or "model"
    folder = user_cache_dir() / "heads" / f"{slug}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"config.json.{uuid.uuid4().hex[:8]}"
    tmp.write_text(text + "\n")
    tmp.replace(folder / "config.json")
    return str(folder)
