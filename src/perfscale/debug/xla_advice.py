"""`debug xla`'s advice: the fixes a result calls for (buckets, a static cache, .item() out of the step, CPU
fallbacks) and the one-line verdict."""

from __future__ import annotations

from perfscale.debug.xla_result import PassResult, XlaDebugResult


def fixes_for(mode, engine, before: PassResult, after: PassResult, buckets, new_tokens, log_every) -> list[str]:
    fixes = []
    b = ",".join(map(str, buckets))
    if before.distinct_shapes > len(buckets) or before.compilations > after.compilations:
        if mode == "train":
            fixes.append(f"pad to buckets: {before.distinct_shapes} distinct shapes compiled {before.compilations} graphs; padded to "
                         f"buckets {b} they compiled {after.compilations} (padding cost: {pad_cost(after):.0%} more tokens). "
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


def pad_cost(p: PassResult) -> float:
    return p.padded_tokens / p.tokens - 1 if p.tokens else 0.0


def verdict_for(r: XlaDebugResult) -> str:
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

