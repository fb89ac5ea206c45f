"""`debug xla`: catch recompilation and host synchronisation before they cost a TPU day.

The lesson of the guides "Training on TPU" and "XLA integration": a compiler specialises a graph on its
input shapes, so every new (batch, sequence) shape compiles a new graph. Batches padded to their own
longest sequence (DataCollatorWithPadding's default), prompts of every length, and a KV cache that grows
by one token per step give a new shape almost every step, and the run spends its time compiling. A
host synchronisation inside the step (`loss.item()` for logging, printing a tensor, an `if` on a
tensor) cuts the step's graph in two and stalls the host each step.

This runs a real training step (forward, loss, backward, AdamW) or `generate()` of a model over a
stream of realistic lengths (`--lengths`, a data file, or the sentences of the shipped corpus) twice:
1. as written: batches padded to their longest sequence, `loss.item()` read inside the step
   (the common logging habit), generation with a dynamic cache;
2. fixed: lengths padded up to buckets (the smallest bucket >= the length: what
   `DataCollatorWithPadding(tokenizer, pad_to_multiple_of=...)` or `padding="max_length"` per bucket
   does), `.item()` moved out of the step (read every --log-every steps), generation with a static
   cache of one fixed length over the same buckets;
and reports, for each: compilations per distinct shape, the reasons dynamo gave for each recompile,
graph breaks, the synchronisations found (and where), on XLA the device-to-host transfers and the ops
that fell back to the CPU (`aten::*` counters), and the wall time. Goal after the fix: training
compiles at most one graph per bucket (+1: the first step also creates the optimizer's state), generation under
torch.compile at most `runtimes.decoder.graph_bound(buckets)`. On XLA one generate() call compiles several graphs
(prefill, decode, the stopping and sampling steps), so there the rule is: nothing compiles after a bucket's first call.

Engines: `torch_xla` on an XLA device (PJRT: TPU, or CPU with PJRT_DEVICE=CPU), counted with
`torch_xla.debug.metrics`; otherwise `torch.compile(dynamic=False)` on the CPU or a CUDA GPU, counted
with dynamo's counters (debug/recompile.py). dynamic=False is what XLA does (one graph per shape);
torch.compile's default (automatic dynamic shapes) would recompile once and then trace the length
symbolically, which CUDA graphs and XLA cannot use.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError, UnsupportedModelError

MODES = ("train", "generate")
DEVICES = ("auto", "cpu", "cuda", "xla")
BACKENDS = ("eager", "aot_eager", "inductor")
DEFAULT_MODEL = "perfscale-tiny-llama"
INSTALL_LINE = 'pip install torch==2.9.1 -e ".[xla]"   # in its own environment: torch-xla 2.9 needs torch 2.9 (docs/xla.md)'
MAX_STEPS = 1000
MAX_LEN = 4096
_WORD = re.compile(r"\w+|[^\w\s]")


# ----- results -----
@dataclass
class PassResult:
    """One pass over the input stream (as written, or fixed)."""

    name: str
    padding: str  # "longest in batch" | "buckets 16,32,64"
    item_in_step: bool | None  # train: whether loss.item() is read inside the step; None for generate
    cache: str | None  # generate: dynamic | static
    steps: int
    distinct_shapes: int
    compilations: int  # graphs compiled (dynamo: unique graphs; XLA: CompileTime samples)
    per_shape: list[dict[str, Any]]  # {"shape": [b, s], "steps": n, "compilations": n}
    recompile_reasons: list[str]
    graph_breaks: list[dict[str, Any]]
    syncs: list[dict[str, Any]]  # host synchronisations found in one step (SyncProbe), per step
    transfers_from_device: int | None  # XLA: TransferFromDeviceTime samples; None under torch.compile
    fallbacks: list[dict[str, Any]]  # XLA: aten:: ops run on the CPU, with counts; [] under torch.compile
    recompile_limit_hit: bool
    wall_s: float
    steady_step_s: float | None  # median time of the steps that compiled nothing
    tokens: int  # real tokens processed
    padded_tokens: int  # tokens computed, padding included
    step_seconds: list[float] = field(default_factory=list)
    step_compilations: list[int] = field(default_factory=list)
    step_shapes: list[list[int]] = field(default_factory=list)


@dataclass
class XlaDebugResult:
    model: str
    mode: str
    engine: str  # "torch_xla" | "torch.compile"
    device: str
    backend: str | None  # torch.compile backend; None on XLA
    batch: int
    lengths_source: str
    lengths: list[int]
    buckets: list[int]
    new_tokens: int | None
    bound: int | None  # most compilations the fixed pass may have; None: the rule is "none after a shape's first step"
    before: PassResult
    after: PassResult
    verdict: str
    fixes: list[str]
    notes: list[str]
    versions: dict[str, str]

    @property
    def within_bound(self) -> bool:
        if self.bound is not None:
            return self.after.compilations <= self.bound
        first: set[int] = set()  # step indices where a shape appears for the first time
        seen: set[tuple[int, ...]] = set()
        for i, s in enumerate(self.after.step_shapes):
            if tuple(s) not in seen:
                seen.add(tuple(s))
                first.add(i)
        return all(c == 0 for i, c in enumerate(self.after.step_compilations) if i not in first)

    @property
    def bound_rule(self) -> str:
        if self.bound is None:
            return "no compilation after a bucket's first generate() call (XLA compiles generate's prefill, decode and sampling graphs per bucket)"
        if self.mode == "train":
            return f"at most one graph per bucket + 1 (the first step also creates the optimizer's state): {self.bound}"
        return f"at most 2 prefill graphs per bucket (padded / exactly full) + 1 decode graph (runtimes.decoder.graph_bound): {self.bound}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["within_bound"] = self.within_bound
        data["bound_rule"] = self.bound_rule
        return {"kind": "debug-xla", **data}


# ----- inputs -----
def parse_int_list(text: str | None, what: str) -> list[int] | None:
    """'16,32,64' -> [16, 32, 64]; None/'' -> None."""
    if text is None or not str(text).strip():
        return None
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_LEN:
            raise InvalidConfigError(f"{what} {text!r}: {part!r} is not an integer in 1..{MAX_LEN}. Give a comma-separated list, e.g. 12,40,33.")
        out.append(int(part))
    return out


def corpus_lengths() -> list[int]:
    """Sentence lengths of the shipped corpus (perfscale/data/corpus/sentences.txt), in word-piece-like units
    (words and punctuation marks): a realistic spread of lengths without a tokenizer."""
    from importlib.resources import files

    text = files("perfscale.data").joinpath("corpus/sentences.txt").read_text(encoding="utf-8")
    return [len(_WORD.findall(line)) for line in text.splitlines() if line.strip()]


def data_lengths(path: str, tokenizer_dir: str | None = None) -> tuple[list[int], str]:
    """Lengths from a file: a JSON list of token-id lists, or text (one example per line), tokenized with the
    model folder's tokenizer when it has one, else counted in words and punctuation marks."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"--data {path!r} cannot be read ({exc.__class__.__name__}). "
                                 "Give a JSON file of token-id lists ([[1, 2], [3, 4, 5]]) or a UTF-8 text file, one example a line.") from exc
    if p.suffix == ".json":
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise InvalidConfigError(f"--data {path!r} is not valid JSON ({exc}). Give a list of token-id lists: [[1, 2], [3, 4, 5]].") from exc
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
            raise InvalidConfigError(f"--data {path!r} must hold a non-empty list of non-empty token-id lists: [[1, 2], [3, 4, 5]].")
        return [len(r) for r in rows], f"{path} ({len(rows)} examples)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InvalidConfigError(f"--data {path!r} holds no text. Give one example a line, or a JSON list of token-id lists.")
    tokenizer = None
    if tokenizer_dir and any((Path(tokenizer_dir) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer is not None:
        return [len(tokenizer(ln)["input_ids"]) for ln in lines], f"{path} ({len(lines)} lines, the model's tokenizer)"
    return [len(_WORD.findall(ln)) for ln in lines], f"{path} ({len(lines)} lines, counted in words and punctuation: no tokenizer)"


def draw(lengths: list[int], n: int, seed: int, max_len: int) -> list[int]:
    """n lengths drawn (seeded, with replacement) from a population of lengths, clipped to 2..max_len."""
    import random

    rng = random.Random(seed)
    return [min(max(2, x), max_len) for x in rng.choices(lengths, k=n)]


def default_buckets(max_len: int) -> list[int]:
    """Powers of two from 16 up to the first that holds max_len: a handful of shapes, at most 2x padding."""
    out = [16]
    while out[-1] < max_len:
        out.append(out[-1] * 2)
    return out


# ----- engines -----
def _resolve_device(device: str) -> tuple[str, str]:
    """(engine, device) for --device."""
    if device not in DEVICES:
        raise InvalidConfigError(f"--device {device!r} is not one of: {', '.join(DEVICES)}. "
                                 "xla needs torch_xla; auto picks xla when torch_xla is installed, else CUDA, else the CPU.")
    if device in ("xla", "auto"):
        try:
            import torch_xla  # noqa: F401
        except ImportError as exc:
            if device == "xla":
                raise InvalidConfigError(
                    f"--device xla: torch_xla is not installed here ({exc.__class__.__name__}: {exc}). torch-xla exists for torch 2.9 "
                    f"only; install it in a separate environment: {INSTALL_LINE}, then run with PJRT_DEVICE=CPU (or TPU). "
                    "Or drop --device xla: the same check runs with torch.compile on this machine.") from exc
        else:
            return "torch_xla", "xla"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidConfigError("--device cuda: no CUDA device is visible here. Use --device cpu (torch.compile on the CPU) or auto.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "torch.compile", device


class _XlaCounters:
    """torch_xla.debug.metrics deltas: compilations, device-to-host transfers, CPU fallbacks."""

    def __init__(self) -> None:
        import torch_xla.debug.metrics as met

        self.met = met

    def snapshot(self) -> dict[str, Any]:
        met = self.met
        compile_data = met.metric_data("CompileTime")
        transfer = met.metric_data("TransferFromDeviceTime")
        return {"compile": int(compile_data[0]) if compile_data else 0,
                "transfer": int(transfer[0]) if transfer else 0,
                # aten::_local_scalar_dense is .item() (counted as a transfer and a sync), not an op XLA failed to lower
                "fallbacks": {n: int(met.counter_value(n) or 0) for n in met.counter_names()
                              if n.startswith("aten::") and n != "aten::_local_scalar_dense"}}

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        fall = {k: v - a["fallbacks"].get(k, 0) for k, v in b["fallbacks"].items() if v - a["fallbacks"].get(k, 0) > 0}
        return {"compile": b["compile"] - a["compile"], "transfer": b["transfer"] - a["transfer"], "fallbacks": fall}


def _pad_batch(rows: list[list[int]], length: int, pad: int):
    """Right-padded ids, attention mask and labels (-100 on padding, as DataCollatorForLanguageModeling)."""
    import torch

    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def builtin_step(item_in_step: bool) -> Callable:
    """The training step's compiled part: forward and loss. `item_in_step`: it also reads loss.item(), as a
    loop that logs the loss every step does (a host sync, and under torch.compile a graph break)."""


    def step(model, input_ids, attention_mask, labels):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        return loss, (loss.item() if item_in_step else None)  # (the value logged, as `loss_value = loss.item()` does)

    return step


def _count_since(xla, before, comp: list[int], fallbacks: Counter) -> int:
    """After one step or call: append its compilations to `comp` (XLA's metrics, else dynamo's graph count),
    add its CPU fallbacks to `fallbacks`; return its device-to-host transfers (0 without XLA)."""
    if xla is None:
        from perfscale.debug import recompile

        comp.append(recompile.graph_count() - before)
        return 0
    d = xla.delta(before, xla.snapshot())
    comp.append(d["compile"])
    fallbacks.update(d["fallbacks"])
    return d["transfer"]


def _summarise(name: str, padding: str, shapes: list[tuple[int, ...]], step_comp: list[int], step_s: list[float], **extra) -> PassResult:
    per: dict[tuple[int, ...], list[int]] = {}
    for shape, c in zip(shapes, step_comp, strict=True):
        entry = per.setdefault(shape, [0, 0])
        entry[0] += 1
        entry[1] += c
    steady = [s for s, c in zip(step_s, step_comp, strict=True) if c == 0]
    return PassResult(
        name=name, padding=padding, steps=len(shapes), distinct_shapes=len(per), compilations=sum(step_comp),
        per_shape=[{"shape": list(k), "steps": v[0], "compilations": v[1]} for k, v in sorted(per.items())],
        wall_s=sum(step_s), steady_step_s=statistics.median(steady) if steady else None,
        step_seconds=step_s, step_compilations=step_comp, step_shapes=[list(x) for x in shapes], **extra)


def _train_pass(model, rows_per_step, *, engine, device, backend, buckets, item_in_step, log_every, pad, lr, probe) -> PassResult:
    import torch

    from perfscale.debug import recompile
    from perfscale.runtimes.decoder import bucket_length

    step_fn = builtin_step(item_in_step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    xla = _XlaCounters() if engine == "torch_xla" else None
    shapes, comp, secs, fallbacks, transfers, logged = [], [], [], Counter(), 0, []
    syncs: list[dict[str, Any]] = []
    if xla is None:
        recompile.reset_compiler()
        compiled = torch.compile(step_fn, backend=backend, dynamic=False)
    else:
        compiled = step_fn  # torch_xla traces lazily: the graph is cut and compiled at torch_xla.sync()
    limit_before = recompile.recompile_limit_hits() if xla is None else 0
    with recompile.watch_dynamo() as log:
        for i, rows in enumerate(rows_per_step):
            length = bucket_length(max(len(r) for r in rows), tuple(buckets) if buckets else None)
            ids, mask, labels = (t.to(device) for t in _pad_batch(rows, length, pad))
            shapes.append(tuple(ids.shape))
            if probe and i == 0:  # where the step syncs: one eager, uncounted step under the probe
                p = recompile.SyncProbe()
                with p:
                    loss, _ = step_fn(model, ids, mask, labels)
                    loss.backward()
                    optimizer.zero_grad(set_to_none=True)
                    if not item_in_step and log_every and (i + 1) % log_every == 0:
                        loss.item()
                syncs = p.report()
                if xla is not None:
                    import torch_xla

                    torch_xla.sync()
            before = xla.snapshot() if xla else recompile.graph_count()
            t0 = time.perf_counter()
            loss, _ = compiled(model, ids, mask, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if xla is not None:
                import torch_xla

                torch_xla.sync()  # the step's graph ends here: compiled (new shape) or fetched from the cache
            if not item_in_step and log_every and (i + 1) % log_every == 0:
                logged.append(loss.item())  # outside the step, every log_every steps
            if device == "cuda":
                torch.cuda.synchronize()
            secs.append(time.perf_counter() - t0)
            transfers += _count_since(xla, before, comp, fallbacks)
    real = sum(len(r) for rows in rows_per_step for r in rows)
    padded = sum(b * s for b, s in shapes)
    return _summarise(
        "fixed" if buckets else "as written", f"buckets {','.join(map(str, buckets))}" if buckets else "longest in batch",
        shapes, comp, secs, item_in_step=item_in_step, cache=None,
        recompile_reasons=log.recompile_reasons(), graph_breaks=recompile.graph_breaks() if xla is None else [],
        syncs=syncs, transfers_from_device=transfers if xla is not None else None,
        fallbacks=[{"op": k, "count": v} for k, v in fallbacks.most_common()],
        recompile_limit_hit=bool(xla is None and recompile.recompile_limit_hits() > limit_before),
        tokens=real, padded_tokens=padded)


def _generate_pass(model, prompts, *, engine, device, backend, buckets, new_tokens, pad, probe) -> PassResult:
    """generate() once per prompt (batch 1), left-padded to its bucket when bucketed, on the model's device.
    torch.compile: the model's forward compiled with dynamic=False (prefill and decode steps), as
    runtimes.decoder.DecoderRunner does; XLA: generate traced lazily, cut at torch_xla.sync()."""
    import torch

    from perfscale.debug import recompile
    from perfscale.runtimes.decoder import DecoderSettings, bucket_length

    cache = "static" if buckets else "dynamic"
    settings = DecoderSettings(cache=cache, buckets=tuple(buckets) if buckets else None)
    gen_kw = settings.generate_kwargs(new_tokens)  # with buckets: one static-cache length, largest bucket + new tokens
    xla = _XlaCounters() if engine == "torch_xla" else None
    # transformers keeps the largest static-cache length seen on the model: forget it, so a pass does not inherit one
    if hasattr(model, "_previous_max_cache_length"):
        del model._previous_max_cache_length

    def inputs(prompt):
        length = bucket_length(len(prompt), settings.buckets)
        ids = torch.full((1, length), pad, dtype=torch.long)
        mask = torch.zeros((1, length), dtype=torch.long)
        ids[0, length - len(prompt):] = torch.tensor(prompt)  # left padding: generation continues at the right edge
        mask[0, length - len(prompt):] = 1
        return ids.to(device), mask.to(device)

    def generate(ids, mask):
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=pad, do_sample=False, **{k: v for k, v in gen_kw.items() if k != "do_sample"})
        if xla is not None:
            import torch_xla

            torch_xla.sync()
        elif device == "cuda":
            torch.cuda.synchronize()
        return out  # read back by the caller, outside the probe (the harness's copy is not the model's sync)

    syncs: list[dict[str, Any]] = []
    if probe and xla is None:  # generate's own host syncs, per generated token: one eager call under the probe
        p = recompile.SyncProbe()
        with p:
            out = generate(*inputs(prompts[0]))
        out.cpu()
        syncs = p.report(steps=new_tokens)
        if hasattr(model, "_previous_max_cache_length"):
            del model._previous_max_cache_length
    shapes, comp, secs, fallbacks, transfers = [], [], [], Counter(), 0
    eager_forward = model.forward
    if xla is None:
        recompile.reset_compiler()
        model.forward = torch.compile(model.forward, backend=backend, dynamic=False)
    limit_before = recompile.recompile_limit_hits() if xla is None else 0
    try:
        with recompile.watch_dynamo() as log:
            for i, prompt in enumerate(prompts):
                ids, mask = inputs(prompt)
                shapes.append(tuple(ids.shape))
                p = recompile.SyncProbe() if probe and xla is not None and i == 0 else None
                before = xla.snapshot() if xla else recompile.graph_count()
                t0 = time.perf_counter()
                with p if p is not None else contextlib.nullcontext():
                    out = generate(ids, mask)
                out.cpu()
                secs.append(time.perf_counter() - t0)
                transfers += _count_since(xla, before, comp, fallbacks)
                if p is not None:
                    syncs = p.report(steps=new_tokens)
        limit_hit = bool(xla is None and recompile.recompile_limit_hits() > limit_before)
        breaks = recompile.graph_breaks() if xla is None else []
    finally:
        model.forward = eager_forward
    return _summarise(
        "fixed" if buckets else "as written", f"buckets {','.join(map(str, buckets))}" if buckets else "none (each prompt its own length)",
        shapes, comp, secs, item_in_step=None, cache=cache, recompile_reasons=log.recompile_reasons(), graph_breaks=breaks,
        syncs=syncs, transfers_from_device=transfers if xla is not None else None,
        fallbacks=[{"op": k, "count": v} for k, v in fallbacks.most_common()], recompile_limit_hit=limit_hit,
        tokens=sum(len(p_) for p_ in prompts), padded_tokens=sum(s for _, s in shapes))


# ----- the check -----
def _check(mode, batches, batch, new_tokens, log_every, seed, max_len, backend) -> None:
    problems = []
    if mode not in MODES:
        problems.append(f"--mode {mode!r} is not one of: {', '.join(MODES)}")
    if backend not in BACKENDS:
        problems.append(f"--backend {backend!r} is not one of: {', '.join(BACKENDS)} (torch.compile backends; eager only captures graphs)")
    elif mode == "generate" and backend == "aot_eager":
        problems.append("--backend aot_eager is for training (it traces the backward); generate takes eager or inductor")
    for name, value, low, high in (("batches", batches, 1, MAX_STEPS), ("batch", batch, 1, 1024), ("new-tokens", new_tokens, 1, 1024),
                                   ("log-every", log_every, 0, MAX_STEPS), ("seed", seed, 0, 2**63 - 1), ("max-len", max_len, 2, MAX_LEN)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"--{name} {value!r} must be an integer in {low}..{high}")
    if problems:
        raise InvalidConfigError("; ".join(problems) + ".")


def _versions(engine: str) -> dict[str, str]:
    import torch
    import transformers

    v = {"torch": torch.__version__, "transformers": transformers.__version__}
    if engine == "torch_xla":
        import torch_xla

        v["torch_xla"] = torch_xla.__version__
        v["PJRT_DEVICE"] = os.environ.get("PJRT_DEVICE", "")
    return v


def _load(model, mode: str, device: str, seed: int):
    """The model on the device: a module given as is (Python API), or a catalogue name / folder / hub id built
    like bench builds it (a folder's weights, else seeded random weights from the config)."""
    import torch

    from perfscale.config.precision import Precision
    from perfscale.debug.quiet import quiet_transformers
    from perfscale.measure.scenarios.common import build_lm
    from perfscale.runtimes.decoder import load_decoder

    if isinstance(model, torch.nn.Module):  # train: forward(input_ids, attention_mask, labels) returns .loss
        if getattr(getattr(model, "config", None), "vocab_size", None) is None:
            raise UnsupportedModelError(f"{type(model).__name__} has no config.vocab_size: debug xla feeds token ids. Pass a transformers model.")
        if mode == "generate" and not hasattr(model, "generate"):
            raise UnsupportedModelError(f"{type(model).__name__} has no generate(): --mode generate needs a causal LM.")
        module = model
    elif not isinstance(model, str) or not model.strip():
        raise InvalidConfigError(f"--model {model!r} must be a catalogue name, a local folder or a hub id. List them with `perfscale models`.")
    else:
        with quiet_transformers():
            if mode == "generate":
                module = load_decoder(model, seed=seed)
            else:
                _, module = build_lm(model, "train", Precision.of("fp32"), "sdpa", "cpu", seed)
    if device == "xla":
        import torch_xla

        return module.to(torch_xla.device())
    return module.to(torch.device(device))


def debug_xla(
    model: Any = DEFAULT_MODEL, *, mode: str = "train", lengths: list[int] | None = None, data: str | None = None,
    batches: int = 20, batch: int = 2, buckets: list[int] | None = None, device: str = "auto", backend: str = "eager",
    new_tokens: int = 4, item_in_step: bool = True, log_every: int = 10, max_len: int = 128, seed: int = 0,
    probe: bool = True,
) -> XlaDebugResult:
    """Run the step (train) or generate() over a stream of lengths as written and fixed; count compilations,
    graph breaks, host syncs (and on XLA transfers and CPU fallbacks); return the verdict and the fixes.

    lengths: sequence (train) or prompt (generate) lengths, used in order (repeated when short); else drawn
    (seeded) from `data` or from the shipped corpus's sentences. train: `batches` batches of `batch`
    sequences; generate: `batches` prompts, one per call. buckets: default powers of two from 16 up to the
    longest length."""
    _check(mode, batches, batch, new_tokens, log_every, seed, max_len, backend)
    engine, dev = _resolve_device(device)
    needed = batches * (batch if mode == "train" else 1)
    if lengths:
        lengths = [int(x) for x in lengths]
        if any(not 1 <= x <= MAX_LEN for x in lengths):
            raise InvalidConfigError(f"--lengths {lengths!r}: every length must be in 1..{MAX_LEN}.")
        stream = [lengths[i % len(lengths)] for i in range(needed)]
        source = "--lengths" + (f" (repeated to {needed})" if len(lengths) < needed else "")
    else:
        population, source = data_lengths(data, model if os.path.isdir(str(model)) else None) if data else (corpus_lengths(), "the shipped corpus (perfscale/data/corpus/sentences.txt, words and punctuation)")
        stream = draw(population, needed, seed, max_len)
        source = f"drawn from {source}, clipped to 2..{max_len}"
    if buckets is not None:
        buckets = sorted(set(int(b) for b in buckets))
        if not buckets or buckets[0] < 1:
            raise InvalidConfigError(f"--buckets {buckets!r} must be positive integers, e.g. 16,32,64.")
        if buckets[-1] < max(stream):
            raise InvalidConfigError(f"--buckets {','.join(map(str, buckets))}: the longest length is {max(stream)}, beyond the largest bucket "
                                     f"{buckets[-1]}. Add a bucket >= {max(stream)} (e.g. {buckets[-1] * 2 ** math.ceil(math.log2(max(stream) / buckets[-1]))}).")
    else:
        buckets = default_buckets(max(stream))

    import torch

    from perfscale.runtimes.decoder import graph_bound, make_prompts

    net = _load(model, mode, dev, seed)
    vocab = int(net.config.vocab_size)
    pad = net.config.pad_token_id if getattr(net.config, "pad_token_id", None) is not None else 0
    token_rows = make_prompts(stream, vocab, seed=seed)
    notes: list[str] = []
    torch.manual_seed(seed)
    try:
        if mode == "train":
            net.train()
            rows = [token_rows[i * batch:(i + 1) * batch] for i in range(batches)]
            start = {k: v.detach().clone() for k, v in net.state_dict().items()}
            common = dict(engine=engine, device=dev, backend=backend, log_every=log_every, pad=pad, lr=1e-4, probe=probe)
            before = _train_pass(net, rows, buckets=None, item_in_step=item_in_step, **common)
            net.load_state_dict(start)  # the fixed pass trains from the same weights
            after = _train_pass(net, rows, buckets=buckets, item_in_step=False, **common)
            bound = len(buckets) + 1
        else:
            net.eval()
            common = dict(engine=engine, device=dev, backend=backend, new_tokens=new_tokens, pad=pad, probe=probe)
            before = _generate_pass(net, token_rows, buckets=None, **common)
            after = _generate_pass(net, token_rows, buckets=buckets, **common)
            bound = None if engine == "torch_xla" else graph_bound(tuple(buckets))
    except RuntimeError as exc:
        if engine == "torch_xla":
            raise UnsupportedModelError(
                f"{model!r} failed on the XLA device ({str(exc).splitlines()[0][:300]}). Ops XLA cannot lower normally run on the CPU "
                "(aten:: counters); this one failed outright. Run without --device xla to check it with torch.compile.") from exc
        raise
    finally:
        if engine == "torch.compile":
            from perfscale.debug.recompile import reset_compiler

            reset_compiler()
    fixes = _fixes(mode, engine, before, after, buckets, new_tokens, log_every)
    result = XlaDebugResult(
        model=model if isinstance(model, str) else type(model).__name__, mode=mode, engine=engine, device=dev, backend=None if engine == "torch_xla" else backend, batch=batch if mode == "train" else 1,
        lengths_source=source, lengths=stream, buckets=buckets, new_tokens=new_tokens if mode == "generate" else None, bound=bound,
        before=before, after=after, verdict="", fixes=fixes, notes=notes, versions=_versions(engine))
    result.verdict = _verdict(result)
    if engine == "torch.compile":
        notes.append("torch.compile(dynamic=False), as XLA compiles: one graph per shape. torch.compile's default (dynamic=None) "
                     "would recompile once and then trace the length symbolically; XLA and CUDA graphs cannot.")
        if backend == "eager":
            notes.append("backend eager: dynamo captures the graphs (the counts are exact) without generating kernels, so wall times "
                         "show capture cost, not what inductor or XLA would spend compiling; --backend inductor for that.")
    shared = sorted({tuple(x["shape"]) for x in after.per_shape} & {tuple(x["shape"]) for x in before.per_shape})
    if engine == "torch_xla" and shared:
        notes.append(f"XLA keeps the graphs it compiled in the process (no public reset): the fixed pass's shape(s) "
                     f"{', '.join(' x '.join(map(str, sh)) for sh in shared)} also ran as written, so graphs they share with "
                     "that pass (e.g. the mask checks cut out by a library sync) are counted there, not again.")
    if before.recompile_limit_hit:
        notes.append(f"as written, dynamo's recompile limit ({_limit()}) was reached: the shapes after it ran uncompiled (eager), "
                     "so its compilation count is a floor of what XLA (no limit) would compile.")
    return result


def _limit() -> int:
    from perfscale.debug.recompile import recompile_limit

    return recompile_limit()


def _fixes(mode, engine, before: PassResult, after: PassResult, buckets, new_tokens, log_every) -> list[str]:
    fixes = []
    b = ",".join(map(str, buckets))
    if before.distinct_shapes > len(buckets) or before.compilations > after.compilations:
        if mode == "train":
            fixes.append(f"pad to buckets: {before.distinct_shapes} distinct shapes compiled {before.compilations} graphs; padded to "
                         f"buckets {b} they compiled {after.compilations} (padding cost: {_pad_cost(after):.0%} more tokens). "
                         f"With a tokenizer: DataCollatorWithPadding(tokenizer, pad_to_multiple_of={buckets[0]}) for evenly spaced "
                         "buckets, or tokenizer(..., padding='max_length', max_length=<bucket>) per bucket; Trainer on TPU: "
                         "TrainingArguments(dataloader_drop_last=True) keeps the batch dimension fixed too.")
        else:
            fixes.append(f"fixed generation shapes: {before.distinct_shapes} prompt lengths with a dynamic cache compiled "
                         f"{before.compilations} graphs; left-padded to buckets {b} with a static cache of one length they compiled "
                         f"{after.compilations}: generate(..., cache_implementation='static', max_cache_len={buckets[-1] + new_tokens}, "
                         f"max_new_tokens={new_tokens}, min_new_tokens={new_tokens}) on prompts padded with "
                         f"tokenizer(..., padding='max_length', max_length=<bucket>, padding_side='left').")
    item_syncs = [s for s in before.syncs if s["in"] == "your code"]
    breaks = [g for g in before.graph_breaks if "item" in g["reason"].lower()]
    if mode == "train" and before.item_in_step and (item_syncs or breaks or (before.transfers_from_device or 0) > 0):
        where = item_syncs[0]["where"] if item_syncs else "the step"
        fixes.append(f"move .item() out of the step ({where}): each call waits for the device"
                     + (f" and broke the compiled graph (dynamo counted {sum(g['count'] for g in breaks)} breaks)" if breaks else "")
                     + f"; return the loss tensor and read it every {log_every or 'N'} steps (or accumulate loss.detach() and read the sum).")
    printed = [s for s in before.syncs if "print" in s["kind"] or "format" in s["kind"]]
    if printed:
        fixes.append(f"printing a tensor syncs ({printed[0]['where']}): log outside the step, every N steps.")
    library = [s for s in before.syncs if s["in"] == "library"]
    if library:
        top = library[0]
        fixes.append(f"library code syncs too ({top['kind']} at {top['where']}, {top['per_step']:g} per step): not yours to move, but "
                     "on XLA each one cuts the graph; check the model's options (e.g. attention implementation) if it is in the forward.")
    if after.fallbacks:
        ops = ", ".join(f"{f['op']} ({f['count']})" for f in after.fallbacks[:5])
        fixes.append(f"ops XLA did not lower ran on the CPU: {ops}; each one is a device-to-host round trip. "
                     "Replace the op by one XLA lowers, or move it out of the step.")
    return fixes


def _pad_cost(p: PassResult) -> float:
    return p.padded_tokens / p.tokens - 1 if p.tokens else 0.0


def _verdict(r: XlaDebugResult) -> str:
    b, a = r.before, r.after
    what = "training steps" if r.mode == "train" else "generate() calls"
    speed = f"{b.wall_s:.1f} s -> {a.wall_s:.1f} s"
    def n(k: int, word: str) -> str:
        return f"{k} {word}{'' if k == 1 else 's'}"

    head = (f"{r.engine} on {r.device}: {b.steps} {what} as written compiled {n(b.compilations, 'graph')} for {n(b.distinct_shapes, 'shape')}"
            + (f" and synced with the host {sum(s['per_step'] for s in b.syncs):g} times per "
               + ("step" if r.mode == "train" else "generated token") if b.syncs else "")
            + f"; fixed, {n(a.compilations, 'graph')} for {n(a.distinct_shapes, 'shape')} ({speed})")
    ok = "within" if r.within_bound else "NOT within"
    return head + f"; {ok} the rule for {n(len(r.buckets), 'bucket')}: {r.bound_rule}."
