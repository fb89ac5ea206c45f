"""GPU check of `perfscale trace`: real training steps on CUDA vs the trace of the same config.

For two families (Llama, GPT-2) at ~100M parameters, bf16-mixed, AdamW (foreach), with and
without gradient checkpointing: run 2 real optimizer steps on the GPU and read
`torch.cuda.max_memory_allocated()` above what was allocated before the model existed (the cuBLAS
workspace is allocated by a warm-up matmul first, so it is in the baseline); trace the same config
with `trace(..., device="cuda")` (fake CUDA tensors) and with the CPU emulation of CUDA
(`emulate_cuda=True`, what a CPU-only machine gets). Prints a table, writes JSON to --out.

    python benchmarks/gpu_trace_check.py --out $OUT/trace_gpu.json          # on a GPU, ~1-3 min
    python benchmarks/gpu_trace_check.py --device cpu --dry-run --out x.json  # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def _configs(dry_run: bool) -> list[tuple[str, dict]]:
    if dry_run:  # toy sizes: the whole script path in seconds on a CPU
        llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 320,
                 "max_position_embeddings": 256, "tie_word_embeddings": False}
        gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2, "n_head": 4,
                "n_positions": 256, "vocab_size": 320, "bos_token_id": 0, "eos_token_id": 0, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "attn_pdrop": 0.0}
        return [("llama-toy", llama), ("gpt2-toy", gpt2)]
    else:  # ~110M and ~124M parameters
        llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 768, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "num_key_value_heads": 4, "intermediate_size": 2048, "vocab_size": 32000,
                 "max_position_embeddings": 2048, "tie_word_embeddings": False}
        gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 768, "n_layer": 12, "n_head": 12,
                "n_positions": 1024, "vocab_size": 50257, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return [("llama-110m", llama), ("gpt2-124m", gpt2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dry-run", action="store_true", help="toy model sizes (smoke test)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from perfscale.config import RunConfig
    from perfscale.specs import TrainWorkload, spec_from_config
    from perfscale.trace import trace
    from perfscale.trace.live import real_train_peak

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False; use --device cpu --dry-run for a smoke test", file=sys.stderr)
        return 2
    batch = args.batch or (2 if args.dry_run else 4)
    seq = args.seq or (32 if args.dry_run else 1024)
    if args.device == "cuda":
        a = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
        (a @ a).sum().item()  # allocate the cuBLAS workspace before the baseline
        del a
    rows = []
    for name, cfg in _configs(args.dry_run):
        spec = spec_from_config(cfg, name)
        for ckpt in (False, True):
            # On CPU the reference is the CPU program (bf16-mixed on CPU runs CPU autocast).
            config = RunConfig(TrainWorkload(batch, seq, 1), precision="bf16-mixed", optimizer="adamw", checkpointing=ckpt)
            t0 = time.perf_counter()
            measured = real_train_peak(spec, config, args.device)
            real_s = time.perf_counter() - t0
            row = {"model": name, "params": spec.params.total, "batch": batch, "seq": seq, "checkpointing": ckpt,
                   "measured_bytes": measured, "real_seconds": round(real_s, 2)}
            variants = [("trace", {"device": args.device})]
            if args.device == "cuda":
                variants.append(("emulated", {"device": "cuda", "emulate_cuda": True}))
            for label, kwargs in variants:
                result = trace(spec, config, **kwargs)
                row[f"{label}_bytes"] = result.peak_bytes
                row[f"{label}_traced_on"] = result.traced_on
                row[f"{label}_phase"] = result.phase
                row[f"{label}_seconds"] = round(result.trace_seconds, 2)
                row[f"{label}_error_pct"] = round(100 * (result.peak_bytes - measured) / measured, 3) if measured else None
            rows.append(row)
            print(_line(row), flush=True)
    document = {
        "check": "trace vs real peak allocated bytes",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dry_run": args.dry_run,
        "rows": rows,
    }
    with open(args.out, "w") as fh:
        json.dump(document, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


def _line(row: dict) -> str:
    parts = [f"{row['model']:<11} ckpt={str(row['checkpointing']):<5} measured {row['measured_bytes'] / 2**20:10.2f} MiB"]
    for label in ("trace", "emulated"):
        if f"{label}_bytes" in row:
            parts.append(f"{label} {row[f'{label}_bytes'] / 2**20:10.2f} MiB ({row[f'{label}_error_pct']:+.2f}%, {row[f'{label}_traced_on']})")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
