"""Goal check for issue 17: `perfscale hpo` against Optuna by hand through `Trainer.hyperparameter_search`,
on the same space and budget, with a device-memory limit that makes part of the space infeasible.

    python benchmarks/hpo_vs_by_hand.py [--trials 8] [--steps 10] [--seq 32] [--limit-gib auto]
        [--out benchmarks/results/hpo_vs_by_hand.json]

Space: learning rate 1e-4..1e-2 (log) x micro-batch {4, 8, 32, 64}; the limit (auto: halfway between the
estimated needs of batch 8 and batch 32) leaves batch 32 and 64 out.
- by hand: one process, `trainer.hyperparameter_search(backend="optuna", hp_space=perfscale's hp_space,
  n_trials, catch=(RuntimeError, MemoryError))` (the catch is generous: without it the first OOM ends the
  study), TPE with the same seed. The device limit is enforced for real on this CPU: RLIMIT_DATA = the
  process's data segment after set-up + the limit, so a trial that needs more gets the allocator's
  "can't allocate memory", as on a GPU.
- perfscale: `run_hpo` with the same space, trials, steps, data and `device_memory_gib` = the limit.
Both score the final held-out loss on the same blocks. Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SPACE = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "per_device_train_batch_size": {"choices": [4, 8, 32, 64]}}

BY_HAND = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, optuna, torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from perfscale.hpo import SearchSpace, hp_space
    from perfscale.specs import load_model_spec
    cfg = json.loads(sys.argv[1])
    spec = load_model_spec("perfscale-tiny-llama")
    torch.set_num_threads(cfg["threads"])
    class Blocks(torch.utils.data.Dataset):
        def __init__(self, p): self.x = torch.from_numpy(np.load(p))
        def __len__(self): return len(self.x)
        def __getitem__(self, i): return {"input_ids": self.x[i], "labels": self.x[i]}
    def model_init(trial=None):
        torch.manual_seed(cfg["seed"])
        return AutoModelForCausalLM.from_config(spec.config_object())
    args = TrainingArguments(output_dir=cfg["out"], max_steps=cfg["steps"], warmup_steps=0.0, eval_strategy="steps",
                             eval_steps=cfg["steps"], per_device_eval_batch_size=32, prediction_loss_only=True, save_strategy="no",
                             report_to="none", use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=cfg["seed"])
    trainer = Trainer(model_init=model_init, args=args, train_dataset=Blocks(cfg["train"]), eval_dataset=Blocks(cfg["eval"]))
    def data_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                return int(line.split()[1])
    limit = data_kib() * 1024 + int(cfg["limit_gib"] * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    t0 = time.perf_counter()
    trainer.hyperparameter_search(backend="optuna", hp_space=hp_space(SearchSpace.from_dict(cfg["space"])), n_trials=cfg["trials"],
                                  direction="minimize", catch=(RuntimeError, MemoryError), study_name="by-hand",
                                  storage=cfg["storage"], sampler=optuna.samplers.TPESampler(seed=cfg["seed"]))
    print(json.dumps({"wall_s": time.perf_counter() - t0, "rlimit_data": limit}))
""")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-gib", default="auto")
    ap.add_argument("--out", default="benchmarks/results/hpo_vs_by_hand.json")
    args = ap.parse_args()
    import optuna

    from perfscale.estimate import estimate
    from perfscale.hpo import SearchSpace, run_hpo
    from perfscale.hpo.data import prepare_data
    from perfscale.hpo.feasibility import resolve_capacity
    from perfscale.hpo.space import DEFAULTS, run_config
    from perfscale.specs import load_model_spec

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load_model_spec("perfscale-tiny-llama")
    _, topology = resolve_capacity(None, None)
    need = {b: estimate(spec, run_config(dict(DEFAULTS, per_device_train_batch_size=b), args.seq), topology).memory.total_bytes / 2**30
            for b in (4, 8, 32, 64)}
    limit = (need[8] + need[32]) / 2 if args.limit_gib == "auto" else float(args.limit_gib)
    tmp = Path(tempfile.mkdtemp(prefix="hpo-vs-"))
    data = prepare_data(spec, args.seq, tmp / "data", max_eval_blocks=32)
    # by hand
    storage = f"sqlite:///{tmp / 'by_hand.db'}"
    cfg = {"steps": args.steps, "trials": args.trials, "seed": 0, "threads": args.threads, "train": data.train_path, "eval": data.eval_path,
           "out": str(tmp / "o"), "limit_gib": limit, "space": SPACE, "storage": storage}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BY_HAND, json.dumps(cfg)], capture_output=True, text=True)
    hand_wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="by-hand", storage=storage)
    hand = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params} for t in study.trials]
    hand_ok = [t["value"] for t in hand if t["state"] == "COMPLETE"]
    # perfscale
    t0 = time.perf_counter()
    res = run_hpo(space=SearchSpace.from_dict(SPACE), trials=args.trials, steps=args.steps, eval_steps=max(1, args.steps // 2),
                  seq=args.seq, max_eval_blocks=32, device_memory_gib=limit, storage=str(tmp / "perfscale.db"), threads=args.threads,
                  baseline=False, plots=None)
    ours_wall = time.perf_counter() - t0
    ours = [{"number": t.number, "status": t.status, "value": t.values[0] if t.values else None, "params": t.params,
             "reason": t.reason} for t in res.trials]
    result = {
        "trials": args.trials, "steps": args.steps, "seq": args.seq, "limit_gib": limit, "estimated_need_gib": need,
        "by_hand": {"exit": done.returncode, "stderr_tail": done.stderr[-1500:] if done.returncode else None, "wall_s": hand_wall,
                    # Optuna's own line for each failed trial: "Trial N failed with parameters: ... because of ..."
                    "failures": [line[:400] for line in done.stderr.splitlines() if " failed with " in line or "Error" in line[:60]][:40],
                    "best": min(hand_ok) if hand_ok else None, "oom_trials": sum(t["state"] == "FAIL" for t in hand), "trials": hand},
        "perfscale": {"wall_s": ours_wall, "best": res.best["values"][0] if res.best else None, "counts": res.counts,
                      "oom_trials": res.counts.get("oom", 0), "trials": ours},
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "trials"})
                      for k, v in result.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
