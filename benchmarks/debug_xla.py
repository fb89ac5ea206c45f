"""Recompilation before and after bucketing, with perfscale.debug.xla.debug_xla (issue 20).

    python benchmarks/debug_xla.py [--mode train|generate|both] [--device auto|cpu|xla] [--backend eager|inductor]
                                   [--batches 20] [--prompts 10] [--threads 1] [--out benchmarks/results]

train: the built-in model's training step (forward, loss, backward, AdamW) over 20 batches of 2 sequences whose
lengths are drawn (seed 0) from the shipped corpus's sentences, as written (padded to the longest in the batch,
loss.item() read in the step) and fixed (padded to power-of-two buckets, .item() read every 10 steps outside).
generate: generate() over 10 prompt lengths drawn the same way, 8 new tokens, dynamic cache unpadded vs a static cache
of one length over the buckets. Engine: torch_xla when it imports (PJRT_DEVICE=CPU in its own environment,
docs/xla.md), else torch.compile(dynamic=False). Writes one JSON per mode (the whole result: per-step compilations and
seconds, reasons, syncs, versions) and prints a summary line per pass. Threads default to 1 (FIELD-NOTES: OpenMP
barriers on the shared 2-core box).

    python benchmarks/debug_xla.py --isolate [--device xla] [--prompts 10] [--new-tokens 4] [--mem-gb 8] [--wall-s 900]

--isolate (generate only): each variant (dynamic cache unpadded, then static cache + buckets) runs in its own child
process, killed when its resident memory passes --mem-gb (polled every 0.5 s; RLIMIT_AS at twice that as a backstop)
or its wall time passes --wall-s. A killed variant is a recorded failure with its partial counts: the calls that
finished (per-call compilations and seconds) and XLA's CompileTime count sampled every 2 s inside the child. Written
to debug_xla_<engine>_generate_isolated.json. Why: as written, every prompt length and every cache length is a new
shape, so XLA compiles a prefill graph per prompt and a decode graph per (prompt, token); on 2026-12-02 06:42 that
ran 25 min and died in LLVM ("Cannot allocate memory") on the shared box.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="perfscale-tiny-llama")
    parser.add_argument("--mode", default="both", choices=("train", "generate", "both"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="eager", choices=("eager", "aot_eager", "inductor"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--isolate", action="store_true", help="generate: each variant in a capped child process")
    parser.add_argument("--mem-gb", type=float, default=8.0)
    parser.add_argument("--wall-s", type=float, default=900.0)
    parser.add_argument("--child", choices=("dynamic", "static"), help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if args.isolate:
        return _isolated(args)

    import os

    import torch

    from perfscale.debug.xla import debug_xla

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = ("train", "generate") if args.mode == "both" else (args.mode,)
    for mode in modes:
        started = time.perf_counter()
        result = debug_xla(args.model, mode=mode, batches=args.batches if mode == "train" else args.prompts, batch=args.batch,
                           device=args.device, backend=args.backend, new_tokens=args.new_tokens, max_len=args.max_len)
        doc = result.to_dict()
        doc["benchmark"] = {"argv": sys.argv[1:], "threads": args.threads, "wall_s": time.perf_counter() - started,
                            "machine": platform.node(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
        engine = "xla" if result.engine == "torch_xla" else f"compile-{args.backend}"
        path = out_dir / f"debug_xla_{engine}_{mode}.json"
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"[{mode}, {result.engine} on {result.device}, load {os.getloadavg()[0]:.1f}] lengths {result.lengths}, buckets {result.buckets}")
        for p in (result.before, result.after):
            steady = "-" if p.steady_step_s is None else f"{p.steady_step_s * 1e3:.1f} ms"
            print(f"  {p.name:10s} {p.padding:34s} shapes {p.distinct_shapes:2d}  compilations {p.compilations:3d}  "
                  f"graph breaks {sum(g['count'] for g in p.graph_breaks):2d}  transfers {p.transfers_from_device}  "
                  f"fallbacks {sum(f['count'] for f in p.fallbacks)}  wall {p.wall_s:7.2f} s  steady step {steady}  "
                  f"limit hit {p.recompile_limit_hit}")
        print(f"  {result.verdict}\n  -> {path}")
    return 0


def _child(args) -> int:
    """One generate variant, its progress appended to args.progress as JSON lines (kept if this process is killed)."""
    import os
    import threading
    from dataclasses import asdict

    import torch

    from perfscale.debug import xla as dx
    from perfscale.debug.xla_passes import generate_pass
    from perfscale.runtimes.decoder import make_prompts

    torch.set_num_threads(args.threads)
    log = open(args.progress, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole life of the child

    def write(**kw) -> None:
        log.write(json.dumps({"t": round(time.time(), 2), **kw}) + "\n")

    engine, dev = dx._resolve_device(args.device)
    stream = dx.draw(dx.corpus_lengths(), args.prompts, 0, args.max_len)
    buckets = dx.default_buckets(max(stream))
    write(event="start", engine=engine, device=dev, lengths=stream, buckets=buckets, pid=os.getpid())
    if engine == "torch_xla":
        import torch_xla.debug.metrics as met

        def sample() -> None:
            while True:
                data = met.metric_data("CompileTime")
                write(event="sample", compile_so_far=int(data[0]) if data else 0)
                time.sleep(2.0)

        threading.Thread(target=sample, daemon=True).start()
    net = dx._load(args.model, "generate", dev, 0)
    net.eval()
    pad = net.config.pad_token_id if getattr(net.config, "pad_token_id", None) is not None else 0
    rows = make_prompts(stream, int(net.config.vocab_size), seed=0)
    torch.manual_seed(0)
    result = generate_pass(
        net, rows, engine=engine, device=dev, backend=args.backend, buckets=buckets if args.child == "static" else None,
        new_tokens=args.new_tokens, pad=pad, probe=False,
        on_call=lambda i, shape, c, s: write(event="call", i=i, shape=list(shape), compilations=c, seconds=s))
    write(event="done", result=asdict(result), versions=dx._versions(engine))
    return 0


def _rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _isolated(args) -> int:
    """Each generate variant in a child process under a memory and a wall-clock cap; a killed one is a result."""
    import os
    import resource
    import signal
    import subprocess

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = int(args.mem_gb * 2**30)
    variants = {}
    for variant in ("static", "dynamic"):  # the fix first: it is the one that must finish
        progress = out_dir / f".debug_xla_{variant}.progress.jsonl"
        progress.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--child", variant, "--progress", str(progress), "--device", args.device,
               "--model", args.model, "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens),
               "--max-len", str(args.max_len), "--threads", str(args.threads), "--backend", args.backend]

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (2 * cap, 2 * cap))  # backstop; the RSS poll below is the cap
            os.setsid()

        started = time.perf_counter()
        child = subprocess.Popen(cmd, preexec_fn=limit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak, why = 0, None
        while child.poll() is None:
            rss = _rss(child.pid)
            peak = max(peak, rss)
            if rss > cap:
                why = f"memory cap: resident {rss / 2**30:.2f} GiB > {args.mem_gb:g} GiB"
            elif time.perf_counter() - started > args.wall_s:
                why = f"wall-clock cap: {args.wall_s:g} s"
            if why:
                os.killpg(child.pid, signal.SIGKILL)
                break
            time.sleep(0.5)
        rc = child.wait()
        wall = time.perf_counter() - started
        tail = child.stdout.read()[-3000:] if child.stdout else ""
        rows = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.strip()] if progress.exists() else []
        calls = [r for r in rows if r["event"] == "call"]
        samples = [r["compile_so_far"] for r in rows if r["event"] == "sample"]
        done = next((r for r in rows if r["event"] == "done"), None)
        start = next((r for r in rows if r["event"] == "start"), {})
        status = "ok" if done and rc == 0 else ("killed: " + why if why else f"failed: exit {rc}")
        variants[variant] = {
            "status": status, "exit": rc, "wall_s": wall, "peak_rss_bytes": peak, "lengths": start.get("lengths"),
            "buckets": start.get("buckets"), "calls_done": len(calls), "call_compilations": [c["compilations"] for c in calls],
            "call_seconds": [c["seconds"] for c in calls], "call_shapes": [c["shape"] for c in calls],
            "compilations_so_far": max(samples) if samples else sum(c["compilations"] for c in calls),
            "result": done["result"] if done else None, "versions": done["versions"] if done else None,
            "output_tail": "" if done else tail}
        v = variants[variant]
        print(f"[{variant}] {status}; {v['calls_done']}/{args.prompts} calls, compilations {v['compilations_so_far']} "
              f"(per call {v['call_compilations']}), wall {wall:.1f} s, peak RSS {peak / 2**30:.2f} GiB", flush=True)
    doc = {"kind": "debug-xla-isolated", "argv": sys.argv[1:], "mem_cap_gib": args.mem_gb, "wall_cap_s": args.wall_s,
           "new_tokens": args.new_tokens, "prompts": args.prompts, "variants": variants, "machine": platform.node(),
           "load_avg": os.getloadavg()}
    engine = "xla" if args.device == "xla" else f"compile-{args.backend}"
    path = out_dir / f"debug_xla_{engine}_generate_isolated.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
