"""Estimated Trainer speed of an encoder fine-tune on one GPU vs the transformers guide's published runs (issue 14 item 5).

Held out: none of the time model's constants was chosen with these rows (estimate/gpu_step.py says what its two fitted
constants were fitted on); the fp32 rows motivated the form of gpu_step.software_efficiency, which has no constant.
Each row rebuilds one experiment of the guide as a spec + RunConfig on a V100-16GB and compares the closed-form estimate with the published Trainer `train_samples_per_second`; the guide's "GPU memory occupied" (what
nvidia-smi shows: the CUDA context + PyTorch's reserved cache) is reported next to the estimate's device total
(allocated peak + context + fragmentation margin), not tested.
Writes benchmarks/results/plan_vs_published_trainer.json. Run: python benchmarks/plan_vs_published_trainer.py

Source
- [HF-1GPU] huggingface/transformers docs/source/zh/perf_train_gpu_one.md (read at
  57ddbf5ead36f05e6e77d4a34d0d838bddf2af9f; the 2022 text of the English guide "Efficient Training on a Single GPU",
  whose numbers were later dropped from docs/source/en): Tesla V100-SXM2 16GB (its nvidia-smi output),
  AutoModelForSequenceClassification.from_pretrained("bert-large-uncased") (2 labels, the config default), 512
  sequences x 512 random token ids, Trainer with num_train_epochs 1 and the per-row TrainingArguments below; each
  row's "Samples/second" is the Trainer's train_samples_per_second (512 samples over train_runtime, so the first
  step's warm-up and the data loading are inside it). Optimizer: the Trainer's default of then, adamw_hf
  (transformers' AdamW, a loop over the parameters), modelled as adamw_torch (torch's unfused AdamW; perfscale has no
  adamw_hf), except the rows with optim="adafactor" and with bitsandbytes' Adam8bit. Attention: BERT's eager
  attention (the guide predates SDPA in transformers). fp16=True is Trainer's autocast mixed precision
  (fp16-mixed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.specs import TrainWorkload, load_model_spec, parse_topology

MIB = 2**20
HARDWARE = "V100-16GB"
SEQ = 512  # the guide's 512 sequences of 512 tokens; samples/s does not depend on how many


def trainer_run(batch: int, accum: int = 1, checkpointing: bool = False, fp16: bool = False,
                optimizer: str = "adamw_torch") -> RunConfig:
    """One TrainingArguments of the guide as a RunConfig (eager attention; fp16=True is autocast)."""
    return RunConfig(TrainWorkload(batch, SEQ, accum), precision="fp16-mixed" if fp16 else "fp32",
                     optimizer=optimizer, checkpointing=checkpointing, attn="eager")


ROWS = [
    # (label, RunConfig, published samples/s, published "GPU memory occupied" MB, section of the guide)
    ("b4, fp32", trainer_run(4), 8.86, 14949, "Vanilla Training"),
    ("b1 x ga4, fp32", trainer_run(1, 4), 7.75, 8681, "Gradient Accumulation"),
    ("b1 x ga4, GC, fp32", trainer_run(1, 4, True), 5.99, 6775, "Gradient Checkpointing"),
    ("b4, fp16", trainer_run(4, fp16=True), 18.64, 13939, "FP16 Training"),
    ("b1 x ga4, GC, fp16", trainer_run(1, 4, True, True), 10.09, 7275, "FP16 Training (combined)"),
    ("b4, adafactor", trainer_run(4, optimizer="adafactor"), 7.96, 12295, "Adafactor"),
    ("b1 x ga4, GC, fp16, adafactor", trainer_run(1, 4, True, True, "adafactor"), 9.06, 4847, "Adafactor (combined)"),
    ("b4, 8-bit Adam", trainer_run(4, optimizer="adamw_bnb_8bit"), 9.15, 13085, "8-bit Adam"),
    ("b1 x ga4, GC, fp16, 8-bit Adam", trainer_run(1, 4, True, True, "adamw_bnb_8bit"), 10.35, 5363,
     "8-bit Adam (combined)"),
]


def spec():
    return load_model_spec("bert-large-uncased", task="sequence-classification", num_labels=2)


def run_row(row, model=None) -> dict:
    label, config, published, published_mb, section = row
    est = estimate(model or spec(), config, parse_topology(HARDWARE))
    w = config.workload
    value = w.batch * w.grad_accum / est.time.step_seconds
    err = value / published - 1
    return {"run": label, "section": section, "published_samples_per_s": published, "estimated_samples_per_s": value,
            "error": err, "within_15pct": abs(err) <= 0.15, "step_seconds": est.time.step_seconds,
            "split": est.time.split, "mfu": est.time.mfu, "fits": est.fits,
            "published_occupied_mib": published_mb,  # nvidia-smi's "MB" are MiB
            "estimated_peak_mib": est.memory.peak_bytes / MIB, "estimated_total_mib": est.memory.total_bytes / MIB,
            "run_config": config.to_dict()}


def run() -> dict:
    model = spec()
    return {"benchmark": "plan_vs_published_trainer", "hardware": HARDWARE, "model": "bert-large-uncased",
            "rows": [run_row(row, model) for row in ROWS]}


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    doc = run()
    path = Path(__file__).parent / "results"
    path.mkdir(exist_ok=True)
    (path / "plan_vs_published_trainer.json").write_text(json.dumps(doc, indent=2))
    print(f"{'run':<32} {'published':>9} {'estimate':>9} {'error':>7} {'MFU':>6} {'occupied MB pub':>15} "
          f"{'est peak/total MiB':>19}")
    for r in doc["rows"]:
        print(f"{r['run']:<32} {r['published_samples_per_s']:9.2f} {r['estimated_samples_per_s']:9.2f} "
              f"{r['error']:+7.1%} {r['mfu']:6.1%} {r['published_occupied_mib']:15d} "
              f"{r['estimated_peak_mib']:9.0f}/{r['estimated_total_mib']:.0f}")
