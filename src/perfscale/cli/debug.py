"""`perfscale debug overflow|dist|profile`: troubleshooting verbs that end in a verdict, not raw data.

Each is a thin wrapper over a function of `perfscale.debug` returning a typed result; the tables are drawn
here from that result's document.
"""

from __future__ import annotations

from typing import Any

import typer

from perfscale.cli import knobs
from perfscale.report.emit import emit

app = typer.Typer(help="Troubleshoot: where values overflow, whether the cluster works, where a step's time goes.",
                  no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")


def _bytes(n: int) -> str:
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


# ----- overflow -----
@app.command("overflow")
def overflow(
    model: str = typer.Option("perfscale-tiny-llama", "--model", "-m", help="Catalogue name, local folder (its weights are loaded) or hub id."),
    precision: str = typer.Option("fp16-mixed", "--precision", help="fp32 | bf16 | fp16 | bf16-mixed | fp16-mixed (torch autocast)."),
    steps: int = typer.Option(2, "--steps", help="Training steps (or forward passes with --infer) to run; stops after the first overflow."),
    batch: int = typer.Option(2, "--batch", help="Sequences per step."),
    seq: int = typer.Option(32, "--seq", help="Tokens per sequence."),
    infer: bool = typer.Option(False, "--infer", help="Forward passes only (no backward, no optimizer)."),
    data: str = typer.Option(None, "--data", help="Token ids as JSON ([[1, 2, ...], ...]) or a text file (needs the model folder's tokenizer). Default: ids drawn with --seed."),
    loss_scale: float = typer.Option(None, "--loss-scale", help="Multiply the loss by this before backward. Default: 65536 (GradScaler's start) under fp16-mixed, else 1."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (models without weights) and of the drawn inputs."),
    frames: int = typer.Option(21, "--frames", help="How many frames before the first overflow to show (DebugUnderflowOverflow shows 21)."),
    check_fixes: bool = typer.Option(True, "--check-fixes/--no-check-fixes", help="Re-run the failing step with each fix (fp32 module, bf16, lower loss scale) and say which works."),
    as_json: bool = JSON,
) -> None:
    """Run real steps with forward and backward hooks on every module; name the first module whose values
    leave their dtype's range, the headroom of the others, gradient underflow, and what fixes it."""
    from perfscale.debug.overflow import debug_overflow

    result = debug_overflow(model, precision=precision, steps=steps, batch=batch, seq=seq, infer=infer, data=data,
                            loss_scale=loss_scale, device=device, seed=seed, frames=frames, check_fixes=check_fixes)
    document = result.to_dict()
    emit(document, as_json, lambda console: render_overflow(console, document))


def render_overflow(console, doc: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]{doc['model']}[/bold] {doc['mode']} at {doc['precision']} on {doc['device']}, batch {doc['batch']} x seq "
                  f"{doc['seq']}, {doc['steps_run']}/{doc['steps_asked']} steps, loss scale {doc['loss_scale']:g}")
    console.print(("[red]" if doc["overflow"] else "[green]") + doc["verdict"])
    if doc["frames"]:
        table = Table(title=f"The {len(doc['frames'])} frames leading to it ({doc['first']['phase']}, step {doc['first']['step']})")
        for col in ("module", "class", "tensor", "dtype", "abs min", "abs max", "inf/nan"):
            table.add_column(col, justify="right" if col.startswith("abs") else "left")
        for f in doc["frames"]:
            for i, t in enumerate(f["tensors"]):
                bad = t["n_inf"] + t["n_nan"]
                table.add_row(f["module"] if i == 0 else "", f["class"] if i == 0 else "", t["role"], t["dtype"],
                              _fmt(t["abs_min_nonzero"]), _fmt(t["abs_max"]), f"[red]{bad}[/red]" if bad else "")
        console.print(table)
    if doc["headroom"]:
        table = Table(title="Closest to the range (headroom = log2(dtype max / abs max))")
        for col in ("module", "phase", "tensor", "dtype", "abs max", "headroom"):
            table.add_column(col, justify="right" if col in ("abs max", "headroom") else "left")
        for h in doc["headroom"]:
            table.add_row(h["module"], h["phase"], h["tensor"], h["dtype"], _fmt(h["abs_max"]), f"2^{h['bits']:.1f}")
        console.print(table)
    u = doc["grad_underflow"]
    if u:
        console.print(f"Gradients: {u['fraction_flushed_without_scaling']:.3%} of {u['values']:,} values would flush to zero in fp16 "
                      f"without loss scaling (|g| < 2^-24), {u['fraction_subnormal_without_scaling']:.2%} would be subnormal (< 2^-14).")
    for c in doc["fix_checks"]:
        console.print(f"  checked: {c['fix']}: {'[green]' if c['ok'] else '[red]'}{c['result']}")
    for fix in doc["fixes"]:
        console.print(f"[bold]fix:[/bold] {fix}")
    for note in doc["notes"]:
        console.print(f"[dim]note: {note}[/dim]")


# ----- dist -----
@app.command("dist")
def dist(
    nproc: int = typer.Option(2, "--nproc", help="Ranks per node (processes torchrun starts on each simulated node)."),
    nnodes: int = typer.Option(1, "--nnodes", help="Simulated nodes on this machine: one torchrun agent each, c10d rendezvous on 127.0.0.1."),
    backend: str = typer.Option("gloo", "--backend", help="gloo (CPU) | nccl (CUDA)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds the whole check may take; every process is killed at the end."),
    step_timeout: float = typer.Option(None, "--step-timeout", help="Seconds a rank waits in one collective for the others (default: a third of --timeout)."),
    sizes: str = typer.Option("4K,256K,4M", "--sizes", help="Message sizes in bytes (K/M/G = 1024^n), comma-separated."),
    iters: int = typer.Option(5, "--iters", help="Timed iterations per collective and size (after one warm-up); the median is kept."),
    topology: str = typer.Option("local", "--topology", help="Whose catalogue link bandwidth to compare the bus bandwidth with (local, 8xH100-80GB, ...)."),
    as_json: bool = JSON,
) -> None:
    """Launch the distributed sanity check under torchrun: rendezvous, ranks, devices, every collective's values
    and bus bandwidth; on failure, which rank hung or exited and at which step, within the timeout.

    Run under torchrun itself (`torchrun --nproc-per-node 8 --no-python perfscale debug dist`), it checks that
    job from inside: --nproc/--nnodes are the job's, and rank 0 prints the verdict."""
    from perfscale.debug.dist import debug_dist, parse_sizes

    result = debug_dist(nproc=nproc, nnodes=nnodes, backend=backend, timeout=timeout, step_timeout=step_timeout,
                        sizes=parse_sizes(sizes), iters=iters, topology=topology)
    document = result.to_dict()
    # a failed check is a result (ok: false, the verdict says which rank and step), not a usage error: exit 0
    if result.rank not in (None, 0) and not as_json:  # inside a job: rank 0 draws the tables, the others one line
        typer.echo(f"rank {result.rank}: {result.verdict}", err=True)
        return
    emit(document, as_json, lambda console: render_dist(console, document))


def render_dist(console, doc: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(("[green]" if doc["ok"] else "[red]") + doc["verdict"])
    table = Table(title="Ranks")
    for col in ("rank", "state", "last step", "device", "exit code", "error"):
        table.add_column(col)
    for r in doc["ranks"]:
        table.add_row(str(r["rank"]), r["state"], str(r["last_step"]), str(r["device"] or "-"),
                      "-" if r["exit_code"] is None else str(r["exit_code"]), (r.get("error") or "")[:80])
    console.print(table)
    if doc["collectives"]:
        link = doc["catalogue_bandwidth"]
        table = Table(title=f"Collectives (busbw: nccl-tests' formula; catalogue {link['link']}: "
                            f"{link['bytes_per_s'] / 1e9:.0f} GB/s)" if link["bytes_per_s"] else "Collectives (busbw: nccl-tests' formula)")
        for col in ("collective", "size", "values", "time", "algbw GB/s", "busbw GB/s", "of catalogue"):
            table.add_column(col, justify="left" if col in ("collective", "values") else "right")
        for c in doc["collectives"]:
            table.add_row(c["collective"], _bytes(c["bytes"]), "ok" if c["ok"] else "[red]WRONG",
                          f"{c['time_s'] * 1e3:.3f} ms", f"{c['algbw'] / 1e9:.3f}", f"{c['busbw'] / 1e9:.3f}",
                          f"{c['fraction_of_catalogue']:.0%}" if c.get("fraction_of_catalogue") else "n/a")
        console.print(table)
    env = doc["env"]
    console.print("environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "(none of NCCL_*, GLOO_*, MASTER_* set)"))
    console.print("interfaces: " + ", ".join(f"{k} {' '.join(v)}" for k, v in doc["interfaces"].items()))
    for note in doc["notes"]:
        console.print(f"[dim]note: {note}[/dim]")


# ----- profile -----
def _what_options():
    """bench's options for *what* runs (scenario, model, sizes, runtime, device), declared once in measure_flags."""
    from perfscale.cli.measure_flags import OPTIONS

    return {name: OPTIONS[name] for name in ("scenario", "model", "batch", "seq", "grad_accum", "prompt", "new_tokens",
                                             "backend", "encoder_quant", "device", "sentences")}


_WHAT = _what_options()


@knobs.with_knobs("measure")
def profile(
    scenario: str = _WHAT["scenario"],
    model: str = _WHAT["model"],
    batch: int = _WHAT["batch"],
    seq: int = _WHAT["seq"],
    grad_accum: int = _WHAT["grad_accum"],
    prompt: int = _WHAT["prompt"],
    new_tokens: int = _WHAT["new_tokens"],
    backend: str = _WHAT["backend"],
    encoder_quant: str = _WHAT["encoder_quant"],
    device: str = _WHAT["device"],
    sentences: int = _WHAT["sentences"],
    steps: int = typer.Option(3, "--steps", help="Profiled steps (after --warmup untimed ones)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed steps first (the first carries compile and allocator warm-up)."),
    out: str = typer.Option(None, "--out", help="Folder for the Chrome/Perfetto trace (trace.json) and, on CUDA, the memory snapshot."),
    as_json: bool = JSON,
    **run_knobs,
) -> None:
    """Run a few steps of the bench scenario under torch.profiler and say where the step's time goes: input
    pipeline, host/launch overhead, GEMMs, memory-bound work, optimizer, communication, synchronisation."""
    import dataclasses

    from perfscale.cli.measure_flags import MeasureFlags, OPTIONS
    from perfscale.debug.profile import debug_profile

    given = {"scenario": scenario, "model": model, "batch": batch, "seq": seq, "grad_accum": grad_accum, "prompt": prompt,
             "new_tokens": new_tokens, "backend": backend, "encoder_quant": encoder_quant, "device": device,
             "sentences": sentences}
    # the measuring flags (stop rule, store, gate) do not apply: their defaults fill MeasureFlags
    rest = {f.name: OPTIONS[f.name].default for f in dataclasses.fields(MeasureFlags) if f.name not in given}
    config = MeasureFlags(**given, **rest).base_config(run_knobs)
    result = debug_profile(config, steps=steps, warmup=warmup, out_dir=out)
    document = result.to_dict()
    emit(document, as_json, lambda console: render_profile(console, document))


app.command("profile")(profile)


def render_profile(console, doc: dict[str, Any]) -> None:
    from rich.table import Table

    from perfscale.debug.profile import KNOBS, LABELS

    console.print(doc["verdict"])
    table = Table(title=f"Where a step's time goes ({doc['steps']} profiled steps on {doc['device']}, median {doc['step_time_s'] * 1e3:.1f} ms)")
    for col in ("class", "share", "ms per step", "what addresses it"):
        table.add_column(col, justify="right" if col in ("share", "ms per step") else "left")
    for c, frac in sorted(doc["fractions"].items(), key=lambda kv: -kv[1]):
        if frac > 0.005:
            table.add_row(LABELS[c], f"{frac:.0%}", f"{doc['seconds'][c] * 1e3:.2f}", KNOBS[c])
    console.print(table)
    table = Table(title="Top operators (self time, all profiled steps)")
    for col in ("operator", "class", "calls", "self ms"):
        table.add_column(col, justify="right" if col in ("calls", "self ms") else "left")
    for o in doc["top_ops"]:
        table.add_row(o["name"][:70], o["class"], str(o["calls"]), f"{o['self_s'] * 1e3:.2f}")
    console.print(table)
    if doc["top_modules"]:
        console.print("Top modules (forward, own time per step): " + ", ".join(
            f"{m['module']} {m['self_s_per_step'] * 1e3:.2f} ms" for m in doc["top_modules"][:5]))
    mem = doc.get("memory") or {}
    if mem.get("peak_bytes_above_start") is not None:
        console.print(f"Memory ({mem['device']}): peak {mem['peak_bytes_above_start'] / 2**20:,.1f} MiB allocated above the start "
                      f"of profiling, {mem['allocations']:,} allocations")
    for kind, path in doc["files"].items():
        console.print(f"{kind}: {path}")
    for note in doc["notes"]:
        console.print(f"[dim]note: {note}[/dim]")


# ----- xla (issue 20) -----
@app.command("xla")
def xla(
    model: str = typer.Option("perfscale-tiny-llama", "--model", "-m", help="Catalogue name, local folder (its weights are loaded) or hub id."),
    mode: str = typer.Option("train", "--mode", help="train (forward, loss, backward, AdamW) | generate (generate() per prompt)."),
    lengths: str = typer.Option(None, "--lengths", help="Sequence (train) or prompt (generate) lengths, comma-separated, used in order. Default: drawn from --data or the shipped corpus."),
    data: str = typer.Option(None, "--data", help="Lengths from a file: JSON token-id lists, or text (one example a line; the model folder's tokenizer if it has one)."),
    batches: int = typer.Option(20, "--batches", help="Training steps (train) or prompts (generate) in the stream."),
    batch: int = typer.Option(2, "--batch", help="Sequences per training batch (padded to the longest, as DataCollatorWithPadding)."),
    buckets: str = typer.Option(None, "--buckets", help="Bucket lengths for the fixed pass, e.g. 16,32,64. Default: powers of two from 16 up to the longest length."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | xla (torch_xla, e.g. PJRT_DEVICE=CPU). auto: xla when torch_xla is installed, else CUDA, else CPU."),
    backend: str = typer.Option("eager", "--backend", help="torch.compile backend: eager (capture only: exact counts, cheap) | aot_eager | inductor (real kernels)."),
    new_tokens: int = typer.Option(4, "--new-tokens", help="generate: tokens per prompt (min = max: a fixed generation length)."),
    item_in_step: bool = typer.Option(True, "--item-in-step/--no-item-in-step", help="train: the step as written reads loss.item() every step (the common logging habit)."),
    log_every: int = typer.Option(10, "--log-every", help="train, fixed pass: read the loss outside the step every N steps (0: never)."),
    max_len: int = typer.Option(128, "--max-len", help="Drawn lengths are clipped to this."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights, the drawn lengths and the token ids."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Find host synchronisations (.item(), printing, if on a tensor) with one extra eager step."),
    as_json: bool = JSON,
) -> None:
    """Count compilations per input shape, graph breaks, host syncs (and on XLA transfers and CPU fallbacks) over a
    stream of realistic lengths, then pad to buckets, move .item() out, and count again."""
    from perfscale.debug.xla import debug_xla, parse_int_list

    result = debug_xla(model, mode=mode, lengths=parse_int_list(lengths, "--lengths"), data=data, batches=batches, batch=batch,
                       buckets=parse_int_list(buckets, "--buckets"), device=device, backend=backend, new_tokens=new_tokens,
                       item_in_step=item_in_step, log_every=log_every, max_len=max_len, seed=seed, probe=probe)
    document = result.to_dict()
    emit(document, as_json, lambda console: render_xla(console, document))


def render_xla(console, doc: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(("[green]" if doc["within_bound"] else "[red]") + doc["verdict"])
    console.print(f"[dim]lengths: {doc['lengths_source']}; buckets {', '.join(map(str, doc['buckets']))}[/dim]")
    table = Table(title="Before and after")
    for col in ("pass", "padding", "shapes", "compilations", "graph breaks", "syncs/step", "transfers", "CPU fallbacks",
                "wall s", "steady step ms", "padding cost"):
        table.add_column(col, justify="left" if col in ("pass", "padding") else "right")
    for p in (doc["before"], doc["after"]):
        steady = "-" if p["steady_step_s"] is None else f"{p['steady_step_s'] * 1e3:.1f}"
        table.add_row(p["name"], p["padding"], str(p["distinct_shapes"]), str(p["compilations"]),
                      str(sum(g["count"] for g in p["graph_breaks"])), f"{sum(s['per_step'] for s in p['syncs']):g}",
                      "n/a" if p["transfers_from_device"] is None else str(p["transfers_from_device"]),
                      str(sum(f["count"] for f in p["fallbacks"])), f"{p['wall_s']:.2f}", steady,
                      f"{p['padded_tokens'] / p['tokens'] - 1:.0%}" if p["tokens"] else "-")
    console.print(table)
    for p in (doc["before"], doc["after"]):
        shapes = Table(title=f"Compilations per shape ({p['name']})")
        for col in ("shape", "steps", "compilations"):
            shapes.add_column(col, justify="right")
        for s in p["per_shape"]:
            shapes.add_row(" x ".join(map(str, s["shape"])), str(s["steps"]), str(s["compilations"]))
        console.print(shapes)
    b = doc["before"]
    for reason in b["recompile_reasons"][:5]:
        console.print(f"recompiled: {reason[:160]}")
    for g in b["graph_breaks"]:
        console.print(f"graph break x{g['count']}: {g['reason'][:160]}")
    for s in b["syncs"]:
        console.print(f"sync {s['per_step']:g}/step: {s['kind']} at {s['where']} ({s['in']})")
    for f in doc["after"]["fallbacks"]:
        console.print(f"CPU fallback: {f['op']} x{f['count']}")
    for fix in doc["fixes"]:
        console.print(f"[bold]fix:[/bold] {fix}")
    for note in doc["notes"]:
        console.print(f"[dim]note: {note}[/dim]")
