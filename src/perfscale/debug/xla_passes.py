"""`debug xla`'s runners: one pass of training steps or generate() calls over the stream, counted per step, on either
engine (torch_xla's metrics on an XLA device, dynamo's counters under torch.compile)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from perfscale.debug.xla_inputs import pad_batch
from perfscale.debug.xla_result import PassResult, summarise


class XlaCounters:
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



def count_since(xla, before, comp: list[int], fallbacks: Counter) -> int:
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



def train_pass(model, rows_per_step, *, step_fn: Callable, engine, device, backend, buckets, item_in_step, log_every, pad, lr,
               probe) -> PassResult:
    """`step_fn(model, ids, mask, labels) -> (loss, logged)` over the batches, then backward and AdamW; `item_in_step`:
    whether step_fn reads loss.item() itself (else the loss is read every log_every steps, outside)."""
    import torch

    from perfscale.debug import recompile
    from perfscale.runtimes.decoder import bucket_length

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    xla = XlaCounters() if engine == "torch_xla" else None
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
            ids, mask, labels = (t.to(device) for t in pad_batch(rows, length, pad))
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
            transfers += count_since(xla, before, comp, fallbacks)
    real = sum(len(r) for rows in rows_per_step for r in rows)
    padded = sum(b * s for b, s in shapes)
    return summarise(
        "fixed" if buckets else "as written", f"buckets {','.join(map(str, buckets))}" if buckets else "longest in batch",
        shapes, comp, secs, item_in_step=item_in_step, cache=None,
        recompile_reasons=log.recompile_reasons(), graph_breaks=recompile.graph_breaks() if xla is None else [],
        syncs=syncs, transfers_from_device=transfers if xla is not None else None,
        fallbacks=[{"op": k, "count": v} for k, v in fallbacks.most_common()],
        recompile_limit_hit=bool(xla is None and recompile.recompile_limit_hits() > limit_before),
        tokens=real, padded_tokens=padded)


def generate_pass(model, prompts, *, engine, device, backend, buckets, new_tokens, pad, probe,
                   on_call: Callable[[int, tuple[int, ...], int, float], None] | None = None) -> PassResult:
    """generate() once per prompt (batch 1), left-padded to its bucket when bucketed, on the model's device.
    on_call(i, shape, compilations, seconds) after each call: progress a caller can keep if the pass is killed.
    torch.compile: the model's forward compiled with dynamic=False (prefill and decode steps), as
    runtimes.decoder.DecoderRunner does; XLA: generate traced lazily, cut at torch_xla.sync()."""
    import torch

    from perfscale.debug import recompile
    from perfscale.runtimes.decoder import DecoderSettings, bucket_length

    cache = "static" if buckets else "dynamic"
    settings = DecoderSettings(cache=cache, buckets=tuple(buckets) if buckets else None)
    gen_kw = settings.generate_kwargs(new_tokens)  # with buckets: one static-cache length, largest bucket + new tokens
    xla = XlaCounters() if engine == "torch_xla" else None
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
                transfers += count_since(xla, before, comp, fallbacks)
                if p is not None:
                    syncs = p.report(steps=new_tokens)
                if on_call is not None:
                    on_call(i, shapes[-1], comp[-1], secs[-1])
        limit_hit = bool(xla is None and recompile.recompile_limit_hits() > limit_before)
        breaks = recompile.graph_breaks() if xla is None else []
    finally:
        model.forward = eager_forward
    return summarise(
        "fixed" if buckets else "as written", f"buckets {','.join(map(str, buckets))}" if buckets else "none (each prompt its own length)",
        shapes, comp, secs, item_in_step=None, cache=cache, recompile_reasons=log.recompile_reasons(), graph_breaks=breaks,
        syncs=syncs, transfers_from_device=transfers if xla is not None else None,
        fallbacks=[{"op": k, "count": v} for k, v in fallbacks.most_common()], recompile_limit_hit=limit_hit,
        tokens=sum(len(p_) for p_ in prompts), padded_tokens=sum(s for _, s in shapes))

