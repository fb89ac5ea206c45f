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

import math
import os
from collections.abc import Callable
from typing import Any

from perfscale.debug.xla_advice import fixes_for, verdict_for
from perfscale.debug.xla_inputs import MAX_LEN, corpus_lengths, data_lengths, default_buckets, draw, parse_int_list
from perfscale.debug.xla_passes import generate_pass, train_pass
from perfscale.debug.xla_result import PassResult, XlaDebugResult
from perfscale.errors import InvalidConfigError, UnsupportedModelError

__all__ = ["BACKENDS", "DEFAULT_MODEL", "DEVICES", "INSTALL_LINE", "MODES", "PassResult", "XlaDebugResult", "builtin_step",
           "corpus_lengths", "data_lengths", "debug_xla", "default_buckets", "draw", "parse_int_list"]

MODES = ("train", "generate")
DEVICES = ("auto", "cpu", "cuda", "xla")
BACKENDS = ("eager", "aot_eager", "inductor")
DEFAULT_MODEL = "perfscale-tiny-llama"
INSTALL_LINE = 'pip install torch==2.9.1 -e ".[xla]"   # in its own environment: torch-xla 2.9 needs torch 2.9 (docs/xla.md)'
MAX_STEPS = 1000


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


def builtin_step(item_in_step: bool) -> Callable:
    """The training step's compiled part: forward and loss. `item_in_step`: it also reads loss.item(), as a
    loop that logs the loss every step does (a host sync, and under torch.compile a graph break)."""


    def step(model, input_ids, attention_mask, labels):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        return loss, (loss.item() if item_in_step else None)  # (the value logged, as `loss_value = loss.item()` does)

    return step



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
            before = train_pass(net, rows, step_fn=builtin_step(item_in_step), buckets=None, item_in_step=item_in_step, **common)
            net.load_state_dict(start)  # the fixed pass trains from the same weights
            after = train_pass(net, rows, step_fn=builtin_step(False), buckets=buckets, item_in_step=False, **common)
            bound = len(buckets) + 1
        else:
            net.eval()
            common = dict(engine=engine, device=dev, backend=backend, new_tokens=new_tokens, pad=pad, probe=probe)
            before = generate_pass(net, token_rows, buckets=None, **common)
            after = generate_pass(net, token_rows, buckets=buckets, **common)
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
    fixes = fixes_for(mode, engine, before, after, buckets, new_tokens, log_every)
    result = XlaDebugResult(
        model=model if isinstance(model, str) else type(model).__name__, mode=mode, engine=engine, device=dev, backend=None if engine == "torch_xla" else backend, batch=batch if mode == "train" else 1,
        lengths_source=source, lengths=stream, buckets=buckets, new_tokens=new_tokens if mode == "generate" else None, bound=bound,
        before=before, after=after, verdict="", fixes=fixes, notes=notes, versions=_versions(engine))
    result.verdict = verdict_for(result)
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
        from perfscale.debug.recompile import recompile_limit

        notes.append(f"as written, dynamo's recompile limit ({recompile_limit()}) was reached: the shapes after it ran uncompiled (eager), "
                     "so its compilation count is a floor of what XLA (no limit) would compile.")
    return result

