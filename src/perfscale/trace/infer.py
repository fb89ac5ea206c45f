"""Trace inference: prefill, then the last decode step of N new tokens, with the real cache class.

Like `generate()`: prefill computes only the last position's logits (`logits_to_keep=1`), each
decode step feeds one token, and generating N tokens runs N-1 decode forwards. Memory grows with
the cache, so the decode peak is the last decode step (cache of prompt + N - 2 tokens going in).
Instead of running N-1 forwards we bring the cache to that length with one untracked forward of
N-2 tokens (same cache class, same tensors as N-2 single-token appends), then trace two decode
steps: the one before last and the last. A static cache is allocated for prompt + N tokens at the
first update and never grows.
"""

from __future__ import annotations

import inspect
from typing import Any

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.specs.model import ModelSpec
from perfscale.trace.build import build_fake, decoder_layers, fake_mode_for, new_fake_mode
from perfscale.trace.result import RawTrace
from perfscale.trace.tracker import KV, RegionMemTracker, to_breakdown


def check_infer_config(spec: ModelSpec, config: RunConfig) -> None:
    if spec.is_encoder_decoder or spec.task != "causal-lm":  # GPT2LMHeadModel is a causal LM too
        raise UnsupportedModelError(
            f"{spec.name} ({spec.architecture}): trace --infer covers decoder-only causal LMs with a KV cache; "
            "use `perfscale plan` for encoder or encoder-decoder inference."
        )
    if config.quantization != "none":
        raise InvalidConfigError(
            f"quantization {config.quantization!r}: the trace engine cannot run quantized kernels on fake weights; use `perfscale plan`."
        )
    if config.kv_cache_dtype != "auto":
        raise InvalidConfigError("kv_cache_dtype fp8 is not traced; use `perfscale plan`.")
    if config.tp != 1 or config.pp != 1 or config.fsdp:
        raise InvalidConfigError("trace --infer covers one device; use `perfscale plan` for tensor/pipeline parallel inference.")


def _make_cache(model: Any, config: RunConfig, total_len: int):
    from transformers import DynamicCache, StaticCache

    if config.cache == "static":
        return StaticCache(config=model.config, max_cache_len=total_len)
    return DynamicCache(config=model.config)


def _instrument_cache(cache: Any, tracker: Any) -> None:
    """Storages created inside cache.update are KV cache; so are the tensors it returns."""
    original = cache.update

    def update(*args, **kwargs):
        tracker._kv_scope += 1
        try:
            keys, values = original(*args, **kwargs)
        finally:
            tracker._kv_scope -= 1
        tracker.retag_kv((keys, values))
        return keys, values

    cache.update = update


def _kv_bytes(tracker: Any) -> int:
    return int(sum(s.get(KV, 0) for s in tracker._device_snaps()))


def trace_infer(spec: ModelSpec, config: RunConfig, device: str, emulation, num_layers: int | None = None) -> RawTrace:
    import torch

    from perfscale.trace.train_step import FAKE_FAILURES, unsupported

    check_infer_config(spec, config)
    wl = config.workload
    prompt, new = wl.prompt, wl.new_tokens
    fake_mode = new_fake_mode()
    model = build_fake(spec, config, fake_mode, device, num_layers)
    with fake_mode_for(fake_mode, device):
        params = inspect.signature(model.forward).parameters
        accepts_keep = "logits_to_keep" in params
        cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers renames it in 5.x
        ids = torch.randint(0, spec.vocab_size, (wl.batch, prompt), device=device)
        cache = _make_cache(model, config, prompt + new)
        tracker = RegionMemTracker(model, decoder_layers(model), inference=True)
        _instrument_cache(cache, tracker)
        kv_bytes = 0
        try:
            with emulation():
                tracker.track_external(model, ids)  # inside: CUDA rounding applies
                with tracker, torch.no_grad():
                    keep = {"logits_to_keep": 1} if accepts_keep else {}
                    tracker.step, tracker.phase_label = "run", "prefill"
                    out = model(input_ids=ids, **{cache_kw: cache}, use_cache=True, **keep)
                    token = out.logits[:, -1:].argmax(-1)
                    del out
                    kv_bytes = _kv_bytes(tracker)
                    decode_steps = new - 1
                    if decode_steps >= 1:
                        pos = prompt
                        if decode_steps > 2 and config.cache == "dynamic":
                            # Untracked: bring the dynamic cache to prompt + new - 3 tokens.
                            tracker.phase_label = None
                            fill = decode_steps - 2
                            filler = torch.randint(0, spec.vocab_size, (wl.batch, fill), device=device)
                            tracker.reset_mod_stats()
                            out = model(input_ids=filler, **{cache_kw: cache}, use_cache=True, **keep)
                            del out, filler
                            pos += fill
                        elif decode_steps > 2:
                            pos += decode_steps - 2
                        tracker.phase_label = "decode"
                        for _ in range(min(decode_steps, 2)):
                            tracker.reset_mod_stats()
                            position = torch.arange(pos, pos + 1, device=device).unsqueeze(0).expand(wl.batch, 1)
                            out = model(input_ids=token, **{cache_kw: cache}, use_cache=True,
                                        position_ids=position, cache_position=torch.arange(pos, pos + 1, device=device), **keep)
                            token = out.logits[:, -1:].argmax(-1)
                            del out
                            pos += 1
                        kv_bytes = _kv_bytes(tracker)
        except FAKE_FAILURES as exc:
            raise unsupported(spec, exc) from exc
    regions = {key: (total, to_breakdown(snap)) for key, (total, snap) in tracker.regions.items()}
    return RawTrace(regions=regions, module_peaks=dict(tracker.module_peaks), num_layers=num_layers, kv_cache_bytes=kv_bytes)


__all__ = ["check_infer_config", "trace_infer"]
