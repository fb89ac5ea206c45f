"""What the checkpoint benchmarks (bigmodel_checkpoints.py, load_scenario.py) share: the CLI run in a fresh
process, and a random Llama-shaped checkpoint saved the old way (torch.save of the state dict)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def perfscale_json(*args: str) -> dict:
    """`perfscale ARGS --json` in a fresh process (offline); its JSON document, or SystemExit with its stderr."""
    proc = subprocess.run([sys.executable, "-c", "from perfscale.cli.app import run; run()", *args, "--json"],
                          capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"perfscale {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def random_llama_bin(folder: Path, *, hidden_size: int, intermediate_size: int, num_attention_heads: int,
                     vocab_size: int, num_hidden_layers: int = 6, num_key_value_heads: int = 4) -> None:
    """Seeded random fp32 weights in a Llama shape: config.json and pytorch_model.bin in a new `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=hidden_size, intermediate_size=intermediate_size,
                                  num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                                  num_key_value_heads=num_key_value_heads, vocab_size=vocab_size,
                                  max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
