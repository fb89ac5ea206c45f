"""`generate`: `model.generate` of exactly `new_tokens` tokens (greedy) after `prompt`-token prompts.

Time to first token (TTFT) and time per output token (TPOT) come from a logits processor, which
transformers calls once per generated token right after that token's forward pass; it synchronises
the device first (generate already syncs each step for its stopping check, so this costs ~nothing).
"""

from __future__ import annotations

import time

from perfscale.measure.scenarios.common import Scenario, build_lm, generate_flops, peak_dtype, sync


class _Clock:
    """LogitsProcessor that timestamps each decoding step."""

    def __init__(self, device: str):
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def setup(config, device: str) -> Scenario:
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    run = config.run
    wl = run.workload
    spec, model = build_lm(config.model, "generate", run.prec, run.attn, device, config.seed)
    model.eval()
    gen = torch.Generator().manual_seed(config.seed)
    prompt = torch.randint(3, spec.vocab_size, (wl.batch, wl.prompt), generator=gen).to(device)
    mask = torch.ones_like(prompt)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    gconf = GenerationConfig(
        max_new_tokens=wl.new_tokens, min_new_tokens=wl.new_tokens, do_sample=False, pad_token_id=pad,
        eos_token_id=None, cache_implementation=run.cache if run.cache == "static" else None,
    )
    notes = ["MFU: prefill counted over all prompt positions (transformers computes logits for the last one only)"]
    if run.compile:
        # Compile the forward once; with a static cache the decode shapes are fixed (no recompiles).
        # transformers' own auto-compile is disabled so that exactly one compile is measured.
        gconf.disable_compile = True
        model.forward = torch.compile(model.forward, dynamic=run.cache != "static")
        if run.cache != "static":
            notes.append("compile with a dynamic cache: shapes grow each step (dynamic=True); use cache=static for fixed shapes")
    clock = _Clock(device)
    last: dict[str, float] = {}

    def step() -> None:
        clock.stamps.clear()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=prompt, attention_mask=mask, generation_config=gconf, logits_processor=LogitsProcessorList([clock]))
        sync(device)
        t1 = time.perf_counter()
        if clock.stamps:
            last["ttft"] = clock.stamps[0] - t0
            last["tpot"] = (t1 - clock.stamps[0]) / max(1, wl.new_tokens - 1)

    def outputs():
        # Teacher-forced logits on the prompt: the gate compares them with the fp32 eager reference.
        with torch.inference_mode():
            logits = model(input_ids=prompt, attention_mask=mask).logits
        return {"logits": logits.float().cpu().numpy()}

    return Scenario(
        step=step, samples_per_iter=wl.batch, tokens_per_iter=wl.batch * wl.new_tokens,
        flops_per_iter=generate_flops(spec, wl.batch, wl.prompt, wl.new_tokens), peak_dtype=peak_dtype(run.prec, device),
        outputs=outputs, iteration_metrics=lambda: dict(last), setup_metrics={"model": spec.name}, notes=notes,
    )
