"""FSDP per-rank peak: the estimate (plan) against the FSDP2 trace, on vocabularies small and large against the layers.

    python benchmarks/fsdp_estimate_vs_trace.py

The cases of benchmarks/LOG.md 2026-12-02 16:20 (FSDP2's root unit): tiny llamas built from configs (tests/tiny_configs.py),
perfscale-tiny-llama on the CUDA and CPU programs. On the CPU program the plan also counts one of gloo's collective
temporaries, which the trace (a fake process group) does not allocate, so those rows differ by that temporary.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from perfscale.config import RunConfig  # noqa: E402
from perfscale.estimate import estimate
from perfscale.trace import trace
from perfscale.specs import load_model_spec, parse_topology, spec_from_config
from perfscale.specs.workload import TrainWorkload
from tiny_configs import tiny_config  # noqa: E402


def main() -> None:
    _H = dict(hidden_size=256, intermediate_size=512, vocab_size=2048)
    cases = []
    small = spec_from_config(tiny_config("llama", **_H, num_hidden_layers=4), "llama")
    for w in (2, 4, 16, 64):
        for p in ("bf16-mixed", "fp32"):
            cases.append(("test", small, TrainWorkload(4, 64), p, w, "H100-80GB", None))
    tiny = load_model_spec("perfscale-tiny-llama")
    for w in (2, 4):
        for p in ("fp32", "bf16-mixed"):
            cases.append(("tiny-cuda", tiny, TrainWorkload(2, 32), p, w, "H100-80GB", None))
        cases.append(("tiny-cpu", tiny, TrainWorkload(2, 32), "fp32", w, "local", "cpu"))
    big = spec_from_config(tiny_config("llama", hidden_size=512, intermediate_size=1376, vocab_size=32000, num_hidden_layers=4), "llama-bigvocab")
    for w in (2, 8):
        for p in ("fp32", "bf16-mixed"):
            cases.append(("bigvocab", big, TrainWorkload(2, 256), p, w, "H100-80GB", None))
    cases.append(("bigvocab-ckpt", big, TrainWorkload(2, 256), "bf16-mixed", 4, "H100-80GB", None))
    out = []
    for name, spec, wl, p, w, hw, dev in cases:
        ck = name.endswith("ckpt")
        run = RunConfig(wl, precision=p, fsdp=w, checkpointing=ck)
        e = estimate(spec, run, parse_topology(f"{w}x{hw}")).memory
        t = trace(spec, run, device=dev or "cuda") if dev else trace(spec, run)
        err = e.peak_bytes / t.peak_bytes - 1
        if not dev:  # the CPU rows carry the gloo temporary the trace does not allocate (docstring)
            out.append(err)
        print(f"{name:14} {p:10} w{w:<3} est {e.peak_bytes:>12,} {e.phase:9} trace {t.peak_bytes:>12,}  {err:+.1%}", flush=True)
    print("max |error| (CUDA program rows)", max(abs(x) for x in out))


if __name__ == "__main__":
    main()
