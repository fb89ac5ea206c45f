"""Write the emitted files for a RunConfig: `perfscale tune --emit trainer|accelerate|deepspeed|fsdp|torchrun|all`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError, choice_error
from perfscale.export.deepspeed import deepspeed_json
from perfscale.export.launch import accelerate_config, fsdp_settings, torchrun_command
from perfscale.export.trainer import trainer_json, trainer_snippet
from perfscale.specs.hardware import Topology

FORMATS = ("trainer", "accelerate", "deepspeed", "fsdp", "torchrun")


@dataclass(frozen=True)
class EmittedFile:
    format: str
    path: str
    description: str


def _yaml(document: dict) -> str:
    import yaml  # PyYAML comes with accelerate and transformers

    return yaml.safe_dump(document, sort_keys=False)


def parse_formats(text: str) -> tuple[str, ...]:
    """'all' or a comma list of FORMATS."""
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    if wanted == ["all"]:
        return FORMATS
    bad = [w for w in wanted if w not in FORMATS]
    if bad or not wanted:
        raise choice_error("emit format", ",".join(bad) or text, (*FORMATS, "all"), "Use a comma list, e.g. --emit trainer,deepspeed.")
    return tuple(wanted)


def emit_files(config: RunConfig, topology: Topology, out_dir: Path, formats: tuple[str, ...], model_id: str,
               build_from: dict | None = None) -> list[EmittedFile]:
    """Write each requested format under out_dir; returns what was written (`build_from`: trainer_snippet's)."""
    if not config.is_train:
        raise InvalidConfigError("--emit writes training launch files; it needs a training configuration (not --infer).")
    if config.cp > 1 and "deepspeed" in formats:
        raise InvalidConfigError(f"context parallel (cp {config.cp}) has no DeepSpeed config key (DeepSpeed's Ulysses "
                                 "sequence parallelism is another method): emit accelerate (FSDP2 with cp), or use cp 1.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[EmittedFile] = []

    def write(fmt: str, name: str, text: str, description: str) -> None:
        path = out_dir / name
        path.write_text(text)
        written.append(EmittedFile(fmt, str(path), description))

    if "trainer" in formats:
        write("trainer", "trainer_args.json", trainer_json(config, topology), "TrainingArguments(**json.load(...))")
        write("trainer", "train_snippet.py", trainer_snippet(config, topology, model_id, build_from), "runs as printed; paste into your training script")
    if "accelerate" in formats:
        write("accelerate", "accelerate_config.yaml", _yaml(accelerate_config(config, topology)), "accelerate launch --config_file accelerate_config.yaml train.py")
    if "deepspeed" in formats:
        write("deepspeed", "ds_config.json", deepspeed_json(config, topology), "TrainingArguments(deepspeed='ds_config.json') or accelerate")
    if "fsdp" in formats:
        write("fsdp", "fsdp_config.json", json.dumps(fsdp_settings(config), indent=2) + "\n", "accelerate fsdp_config block")
    if "torchrun" in formats:
        write("torchrun", "torchrun.sh", torchrun_command(config, topology), "launch one process per device")
    return written
