"""The winner of `perfscale tune` as code that runs as printed (issue 19): for the built-in model the
snippet builds it from its config (it is no hub id), for a hub id or a local folder it loads with
from_pretrained; the printed snippet and the emitted train_snippet.py execute a few Trainer steps."""

from __future__ import annotations

import json
import runpy
from types import SimpleNamespace

from perfscale.config import RunConfig
from perfscale.export.tune_winner import add_trainer_snippet, emit_winner
from perfscale.specs.workload import TrainWorkload
from perfscale.tune.train import TrainTuneOptions

from tiny_configs import tiny_config


def _result(config: RunConfig):
    return SimpleNamespace(winner={"name": "w", "run_config": config.to_dict()}, snippet=None)


def test_builtin_snippet_runs_as_printed(tmp_path, monkeypatch):
    config = RunConfig(TrainWorkload(batch=2, seq=16, grad_accum=2), lora_r=4, checkpointing=True, torch_num_threads=1)
    options = TrainTuneOptions()  # the built-in perfscale-tiny-llama on this machine
    snippet = add_trainer_snippet(_result(config), options).snippet
    assert "from_pretrained" not in snippet and "AutoConfig.for_model('llama'" in snippet and "from_config(config" in snippet
    files = {f["format"] + ":" + f["path"].rsplit("/", 1)[-1]: f["path"] for f in emit_winner(_result(config), ("trainer",), tmp_path / "out", options)}
    emitted = files["trainer:train_snippet.py"]
    assert open(emitted).read() == snippet  # the file is the printed snippet
    monkeypatch.chdir(tmp_path)  # output_dir="perfscale-out" lands here
    done = runpy.run_path(emitted, run_name="__main__")  # as `python train_snippet.py` runs it
    state = done["trainer"].state
    # 2 x batch 2 x accumulation 2 example rows: 2 optimizer steps per epoch, 3 epochs (Trainer's default)
    assert state.global_step == 6 and all(abs(h["loss"]) < 100 for h in state.log_history if "loss" in h)
    model = done["model"]
    assert model.peft_config["default"].r == 4 and model.base_model.model.config.hidden_size == 256  # LoRA on the built-in config


def test_hub_id_and_local_folder_keep_from_pretrained(tmp_path):
    config = RunConfig(TrainWorkload(batch=4, seq=128), precision="bf16")
    hub = add_trainer_snippet(_result(config), TrainTuneOptions(model="llama-3.1-8b", hardware="H100-80GB")).snippet
    assert "from_pretrained('meta-llama/Llama-3.1-8B', attn_implementation='sdpa', dtype=torch.bfloat16)" in hub
    assert "AutoConfig" not in hub
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_config("llama")))
    local = add_trainer_snippet(_result(config), TrainTuneOptions(model=str(folder))).snippet
    assert f"from_pretrained({str(folder)!r}" in local
    for text in (hub, local):
        compile(text, "snippet.py", "exec")
