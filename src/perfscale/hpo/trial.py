"""One trial, inside its own fresh process: `python -m perfscale.hpo.trial JOB.json`.

It fine-tunes the model with the transformers Trainer for the study's budget of optimizer steps on the
train blocks, evaluates on the held-out blocks every `eval_steps`, reports each evaluation loss to the
Optuna trial (the study's storage, opened here: intermediate values are what the median and
Hyperband pruners read) and stops when the pruner says so. It writes one result file; the parent tells
Optuna the outcome. An exception becomes a `failed` (or `oom`) result; a crash, a hang or a kill leaves
no file and the parent classifies the exit (launch.py).

It dies with the perfscale process that started it (perfscale.measure.worker.watch_parent: a
parent-death pipe and PR_SET_PDEATHSIG), so `kill -9` of the study leaves no trial training behind it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

FAULTS = ("oom", "hang", "crash", "error", "sigkill")  # tests: misbehave at a given step


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("optuna").setLevel(logging.WARNING)


def _fault(kind: str) -> None:
    if kind == "sigkill":  # what the kernel's OOM killer (or kill -9) does to a trial
        os.kill(os.getpid(), signal.SIGKILL)
    from perfscale.measure.faults import inject_fault

    inject_fault(kind, "hpo trial")


def _optuna_trial(job: dict[str, Any]):
    """The running trial in the study's storage (None when the parent reports nothing: multi-objective)."""
    if not job.get("report"):
        return None
    import optuna

    from perfscale.hpo.storage import open_storage
    from perfscale.hpo.samplers import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job["storage"], heartbeat=False)
    study = optuna.load_study(study_name=job["study_name"], storage=storage, pruner=make_pruner(job["pruner"], job["steps"], job["eval_steps"]))
    return optuna.trial.Trial(study, job["trial_id"])


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("fault") and job.get("fault_step", 1) == 0:  # tests: misbehave before any work
        _fault(job["fault"])
    import numpy as np
    import torch

    _quiet()
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from perfscale.hpo.space import run_config, training_arguments
    from perfscale.measure.scenarios.common import build_lm, resolve_device

    values = job["values"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    device = resolve_device(job.get("device", "auto"))
    run = run_config(values, job["seq"])
    t0 = time.perf_counter()
    _, model = build_lm(job["model"], "train", run.prec, run.attn, device, job["seed"])
    model.config.use_cache = False
    if values.get("lora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=int(values["lora_r"]), lora_alpha=int(values["lora_alpha"]), task_type="CAUSAL_LM"))
    load_s = time.perf_counter() - t0

    class Blocks(torch.utils.data.Dataset):
        def __init__(self, path: str):
            self.data = torch.from_numpy(np.load(path, allow_pickle=False))

        def __len__(self) -> int:
            return self.data.shape[0]

        def __getitem__(self, i):
            ids = self.data[i]
            return {"input_ids": ids, "labels": ids}

    train, held_out = Blocks(job["train_path"]), Blocks(job["eval_path"])
    trial = _optuna_trial(job)
    state: dict[str, Any] = {"evals": [], "eval_s": 0.0, "pruned_at": None}

    class Report(TrainerCallback):
        def on_step_end(self, args, tstate, control, **kw):
            if job.get("fault") and tstate.global_step >= job.get("fault_step", 1):
                _fault(job["fault"])

        def on_evaluate(self, args, tstate, control, metrics=None, **kw):
            loss = float(metrics["eval_loss"])
            state["evals"].append({"step": tstate.global_step, "eval_loss": loss if math.isfinite(loss) else str(loss)})
            state["eval_s"] += float(metrics.get("eval_runtime", 0.0))
            if trial is not None and tstate.global_step < job["steps"] and math.isfinite(loss):
                trial.report(loss, tstate.global_step)
                if trial.should_prune():
                    state["pruned_at"] = tstate.global_step
                    control.should_training_stop = True

    ta = training_arguments(values)
    with tempfile.TemporaryDirectory(prefix="perfscale-hpo-trial-") as out:
        args = TrainingArguments(
            output_dir=out, max_steps=job["steps"], eval_strategy="steps", eval_steps=job["eval_steps"],
            per_device_eval_batch_size=job.get("eval_batch", 32), prediction_loss_only=True, save_strategy="no", logging_strategy="no", report_to="none",
            disable_tqdm=True, use_cpu=device == "cpu", seed=job["seed"], data_seed=job["seed"], dataloader_num_workers=0,
            **ta,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out, callbacks=[Report()])
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t1 = time.perf_counter()
        out_train = trainer.train()
        wall = time.perf_counter() - t1
        steps_done = int(out_train.global_step)
        if state["pruned_at"] is None and (not state["evals"] or state["evals"][-1]["step"] != steps_done):
            metrics = trainer.evaluate()  # the objective is the loss at the end of the budget
            if not state["evals"] or state["evals"][-1]["step"] != steps_done:
                state["evals"].append({"step": steps_done, "eval_loss": float(metrics["eval_loss"])})
    train_s = max(1e-9, wall - state["eval_s"])
    tokens = steps_done * run.workload.batch * run.workload.grad_accum * run.workload.seq
    memory: dict[str, Any] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                memory["cpu_peak_rss"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    if device == "cuda":
        memory["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
    out: dict[str, Any] = {
        "device": device, "steps": steps_done, "evals": state["evals"], "tokens": tokens, "train_s": train_s,
        "tokens_per_s": tokens / train_s, "load_s": load_s, "memory": memory,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if state["pruned_at"] is not None:
        out.update(status="pruned", reason=f"pruned at step {state['pruned_at']} (eval loss {state['evals'][-1]['eval_loss']:.4f})")
    else:
        loss = float(state["evals"][-1]["eval_loss"])
        if not math.isfinite(loss):  # NaN or inf: diverged
            out.update(status="failed", reason=f"the evaluation loss is {loss} after {steps_done} steps: the training diverged")
        else:
            out.update(status="complete", eval_loss=loss)
    return out


def main(argv: list[str], parent_pid: int | None = None) -> int:
    """`parent_pid`: forked by the launcher (zygote.py), which is then the parent to watch."""
    job = json.loads(Path(argv[0]).read_text())
    from perfscale.measure.worker import parse_oom, watch_parent

    if parent_pid is not None:
        job["parent"] = {"pid": parent_pid, "pipe_fd": None, "workdir": None, "files": (job.get("parent") or {}).get("files", [])}
    watch_parent(job.get("parent"))
    try:
        payload = run_trial(job)
    except MemoryError as exc:
        payload = {"status": "oom", "reason": f"MemoryError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a result
        traceback.print_exc()
        text = f"{type(exc).__name__}: {exc}"
        is_oom, _ = parse_oom(str(exc))
        payload = {"status": "oom" if is_oom else "failed", "reason": text[:2000], "traceback": traceback.format_exc()[-3000:]}
    tmp = Path(job["result_path"] + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, job["result_path"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
