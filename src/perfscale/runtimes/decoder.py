"""Generation runtime: KV cache kind, torch.compile of the forward, batch size, prompt-length buckets.

Why buckets: a compiled model specialises on shapes. With `dynamic=False`, every new prompt
length is a new prefill graph, so serving prompts of many lengths recompiles again and again until
dynamo's recompile limit (8 per code object), after which that code runs uncompiled. Left-padding
each prompt up to the smallest bucket >= its length bounds the prefill shapes to the number of
buckets (the guides' "static shapes with padding buckets", from the XLA/TPU advice). The cost: the
padded tokens are computed too (prefill work grows up to the bucket's length).

Buckets alone are not enough with a static cache: transformers sizes it to prompt + new tokens
(and keeps the largest size seen on the model, `_previous_max_cache_length`), and the cache tensors
are inputs of the decode step, so each larger bucket also compiled a new *decode* graph (measured:
6 lengths over 4 buckets, 7-8 graphs either way). With buckets the runner therefore fixes the
cache length for the whole bucket set: largest bucket + new tokens (`max_cache_len`, passed to
generate), so one decode graph serves every bucket. One more variant per bucket remains: when no
row of a batch needs padding (a prompt exactly a bucket long), transformers' generate drops the
attention mask before calling the forward (SDPA is_causal instead), a call with different inputs,
so that bucket gets a second prefill graph. Bound, whatever the number of distinct lengths:
prefill graphs <= 2 x #buckets (padded / exactly full), + 1 decode graph (`graph_bound`).
The cost of the fixed cache: every decode step attends over the full cache (masked),
2 x layers x kv_heads x head_dim x max_cache_len x batch x 4 bytes of fp32 cache.

Measured per call: TTFT (prefill plus the first token), time per output token after the first,
tokens/s, and the number of graphs dynamo compiled (torch._dynamo counters: stats.unique_graphs),
per pass and cumulatively after each generate call.

int8 weight-only weights (`DecoderSettings.quant`, runtimes/decoder_quant.py): the runner generates
with a quantized copy of the model. A runner installs its compiled forward only while it runs, so
runners of one model take turns (the tuner's interleaved rounds); the gate for every variant is
`greedy_agreement` with the eager fp32 reference.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.errors import InvalidConfigError, UnsupportedModelError, choice_error
from perfscale.runtimes.decoder_quant import QUANT_BACKENDS, QUANT_SCHEMES

CACHES = ("dynamic", "static")
COMPILE_BACKENDS = ("inductor", "eager")
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)
# Random weights are only built for small configs: a 7B model from a config is 28 GB of noise.
MAX_RANDOM_PARAMS = 300_000_000


@dataclass(frozen=True)
class DecoderSettings:
    """How to generate. `generate_kwargs()` / `from_pretrained_kwargs()` are what a user passes on."""

    cache: str = "dynamic"
    """dynamic | static (transformers cache_implementation="static": fixed shapes, needed by compile)."""
    compile: bool = False
    """torch.compile the model's forward (prefill and decode steps), dynamic=False."""
    compile_backend: str = "inductor"
    """inductor (generates kernels) | eager (dynamo capture only: counts graphs at no codegen cost)."""
    batch: int = 1
    """Prompts per generate call (left-padded to a common length)."""
    buckets: tuple[int, ...] | None = None
    """Prompt lengths are left-padded up to the smallest bucket >= length; None: no bucketing.
    With buckets, a partial last batch is filled up to `batch` rows (copies, discarded) so the batch
    dimension is fixed too."""
    max_cache_len: int | None = None
    """Static cache length in tokens, the same for every call so a compiled decode step keeps one shape
    (transformers generate `max_cache_len`). None: largest bucket + new tokens when bucketed, else
    transformers' default (prompt + new tokens, growing)."""
    attn: str = "sdpa"
    quant: str | None = None
    """None (fp32 weights) | int8-weight-only: every linear weight int8 + one fp32 scale per output channel
    (runtimes/decoder_quant.py); the runner quantizes a copy of the model."""
    quant_backend: str | None = None
    """Who quantizes, with quant: torchao (optional package) | torch (torch._weight_int8pack_mm)."""

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise choice_error("KV cache", self.cache, CACHES, "")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise choice_error("compile backend", self.compile_backend, COMPILE_BACKENDS, "")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise InvalidConfigError(f"Decoder batch must be a positive integer, got {self.batch!r}.")
        if self.buckets is not None:
            b = tuple(self.buckets)
            if not b or any(not isinstance(x, int) or x < 1 for x in b) or list(b) != sorted(set(b)):
                raise InvalidConfigError(f"Buckets must be increasing positive integers, e.g. 32,64,128; got {self.buckets!r}.")
            object.__setattr__(self, "buckets", b)
        if self.max_cache_len is not None:
            if self.cache != "static":
                raise InvalidConfigError("max_cache_len sizes the static KV cache; set cache='static' or drop max_cache_len.")
            if not isinstance(self.max_cache_len, int) or self.max_cache_len < 1:
                raise InvalidConfigError(f"max_cache_len must be a positive integer, got {self.max_cache_len!r}.")
        if self.quant is not None and self.quant not in QUANT_SCHEMES:
            raise choice_error("quantization scheme", self.quant, QUANT_SCHEMES, "Or None for fp32 weights.")
        if self.quant is not None and self.quant_backend not in QUANT_BACKENDS:
            raise choice_error("int8 quantization backend", self.quant_backend, QUANT_BACKENDS, "")
        if self.quant is None and self.quant_backend is not None:
            raise InvalidConfigError(f"quant_backend {self.quant_backend!r} without quant: set quant='int8-weight-only' or drop quant_backend.")

    def label(self) -> str:
        parts = [("compile" + ("" if self.compile_backend == "inductor" else f"[{self.compile_backend}]")) if self.compile else "eager",
                 f"{self.cache}-cache", f"b{self.batch}"]
        if self.buckets:
            parts.append("buckets" + ",".join(map(str, self.buckets)) if len(self.buckets) <= 3 else f"buckets{self.buckets[0]}..{self.buckets[-1]}")
        if self.quant:
            parts.append(f"{self.quant}[{self.quant_backend}]")
        return " ".join(parts)

    def cache_length(self, new_tokens: int | None = None) -> int | None:
        """The fixed static-cache length: max_cache_len, else largest bucket + new_tokens; None: not fixed."""
        if self.cache != "static":
            return None
        if self.max_cache_len is not None:
            return self.max_cache_len
        if self.buckets and new_tokens is not None:
            return self.buckets[-1] + new_tokens
        return None

    def generate_kwargs(self, new_tokens: int | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {"do_sample": False}
        if self.cache == "static":
            kw["cache_implementation"] = "static"
            length = self.cache_length(new_tokens)
            if length is not None:
                kw["max_cache_len"] = length
        return kw

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        return {"dtype": "float32", "attn_implementation": self.attn}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["buckets"] = list(self.buckets) if self.buckets else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderSettings:
        data = dict(data)
        if data.get("buckets") is not None:
            data["buckets"] = tuple(data["buckets"])
        return cls(**data)


def graph_bound(buckets: tuple[int, ...]) -> int:
    """Most graphs a bucketed, static-cache compiled run compiles (module docstring): 2 prefill per bucket + 1 decode."""
    return 2 * len(buckets) + 1


def bucket_length(n: int, buckets: tuple[int, ...] | None) -> int:
    """The padded length of a prompt of n tokens: the smallest bucket >= n (multiples of the largest beyond)."""
    if not buckets:
        return n
    for b in buckets:
        if b >= n:
            return b
    top = buckets[-1]
    return -(-n // top) * top


def load_decoder(model: str = "perfscale-tiny-llama", *, seed: int = 0, attn: str = "sdpa"):
    """A causal LM in eval mode: from a folder's weights, or built from a config with seeded random weights."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    if os.path.isdir(model) and any(os.path.exists(os.path.join(model, f)) for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        try:
            return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation=attn).eval()
        except Exception as exc:
            raise UnsupportedModelError(f"Cannot load {model!r} as a causal LM: {exc}. Generation tuning needs a decoder model.") from exc
    from perfscale.specs import load_model_spec

    spec = load_model_spec(model)
    if spec.params.total > MAX_RANDOM_PARAMS:
        raise UnsupportedModelError(
            f"{model!r} has {spec.params.total / 1e9:.1f}B parameters and no local weights; building it with random weights "
            f"is limited to {MAX_RANDOM_PARAMS / 1e6:.0f}M. Pass a local folder with weights, or use perfscale-tiny-llama."
        )
    cfg = spec.config_object()
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    try:
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    except ValueError as exc:
        raise UnsupportedModelError(f"{model!r} ({spec.model_type}) is not a causal LM: {exc}. Generation tuning needs a decoder.") from exc


def make_prompts(lengths: list[int], vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Seeded random token ids (ids 3.. avoid pad/bos/eos), one prompt per length."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab_size, (n,), generator=g).tolist() for n in lengths]


@dataclass
class GenerationRun:
    """One pass over a list of prompts. Times in seconds; per generate call where a list."""

    settings: dict[str, Any]
    tokens: list[list[int]]  # the new tokens per prompt, in input order
    padded_lengths: list[int]
    ttft_s: list[float]
    tpot_s: list[float]  # mean time per output token after the first, per call
    total_s: float
    new_tokens: int
    graphs: int  # graphs dynamo compiled during this pass (0 when not compiled)
    graphs_after_call: list[int] = field(default_factory=list)  # cumulative graphs of this pass after each generate call
    cache_len: int | None = None  # the fixed static-cache length, when the runner fixed one
    recompile_limit_hit: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return sum(len(t) for t in self.tokens) / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens_per_s"] = self.tokens_per_s
        return data


def _graph_count() -> int:
    """Graphs dynamo handed to a backend so far (each recompile, and each piece of a graph break, is one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _recompile_limit_hits() -> int:
    """Frames dynamo gave up on because the recompile limit was reached (they then run eagerly)."""
    from torch._dynamo.utils import counters

    return sum(int(n) for reason, n in counters["unimplemented"].items() if "recompile limit" in reason.lower()
               or "recompile_limit" in reason)


class DecoderRunner:
    """A model plus DecoderSettings: `run(prompts, new_tokens)` -> GenerationRun.

    With `settings.quant` the runner generates with a quantized copy of `model` (`quant_info` says what was
    quantized); the caller's model is untouched. The compiled forward is installed on the model only while `run`
    runs, so several runners (eager, compiled, quantized) can share one model and take turns (interleaved timing).
    """

    def __init__(self, model, settings: DecoderSettings) -> None:
        import torch

        self.settings = settings
        self.quant_info = None
        if settings.quant:
            from perfscale.runtimes.decoder_quant import quantize_decoder

            model, self.quant_info = quantize_decoder(model, settings.quant, settings.quant_backend)
        self.model = model
        self._eager_forward = model.forward
        self._forward = (torch.compile(model.forward, backend=settings.compile_backend, dynamic=False)
                         if settings.compile else None)

    def close(self) -> None:
        """Make sure the model's eager forward is in place (run() puts it back after each call anyway)."""
        self.model.forward = self._eager_forward

    def run(self, prompts: list[list[int]], new_tokens: int) -> GenerationRun:
        # transformers keeps the largest static cache length seen on the model and reuses it: forget it, so a
        # run's cache length (and so its graph count) does not depend on what ran on this model before.
        if hasattr(self.model, "_previous_max_cache_length"):
            del self.model._previous_max_cache_length
        if self._forward is not None:
            self.model.forward = self._forward
        try:
            if self.settings.quant_backend == "torchao":
                from perfscale.runtimes.decoder_quant import quiet_torchao

                with quiet_torchao():
                    return self._run(prompts, new_tokens)
            return self._run(prompts, new_tokens)
        finally:
            self.model.forward = self._eager_forward

    def _run(self, prompts: list[list[int]], new_tokens: int) -> GenerationRun:
        import torch
        from torch._dynamo import config as dynamo_config
        from transformers import LogitsProcessor, LogitsProcessorList

        if new_tokens < 1:
            raise InvalidConfigError(f"new_tokens must be >= 1, got {new_tokens}.")
        if not prompts or any(len(p) < 1 for p in prompts):
            raise InvalidConfigError("Every prompt needs at least one token.")
        stamps: list[float] = []

        class Stamp(LogitsProcessor):
            """Called once per generated token, right after its forward: a timestamp per token."""

            def __call__(self, input_ids, scores):
                stamps.append(time.perf_counter())
                return scores

        pad = self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0
        s = self.settings
        out_tokens: list[list[int]] = [[] for _ in prompts]
        padded, ttft, tpot = [], [], []
        graphs_before, limit_hits_before = _graph_count(), _recompile_limit_hits()
        graphs_after_call: list[int] = []
        gen_kw = s.generate_kwargs(new_tokens)
        t_all = time.perf_counter()
        for start in range(0, len(prompts), s.batch):
            idx = list(range(start, min(start + s.batch, len(prompts))))
            if s.buckets:  # a fixed batch dimension too: fill a short last batch with copies (dropped below)
                idx += [idx[-1]] * (s.batch - len(idx))
            length = bucket_length(max(len(prompts[i]) for i in idx), s.buckets)
            ids = torch.full((len(idx), length), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), length), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: generation continues at the right edge
                ids[row, length - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, length - len(prompts[i]):] = 1
            padded.append(length)
            stamps.clear()
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    pad_token_id=pad, logits_processor=LogitsProcessorList([Stamp()]), **gen_kw,
                )
            end = time.perf_counter()
            ttft.append(stamps[0] - t0 if stamps else end - t0)
            tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0)
            for row, i in enumerate(idx[: min(s.batch, len(prompts) - start)]):
                out_tokens[i] = out[row, length:].tolist()
            graphs_after_call.append(_graph_count() - graphs_before if s.compile else 0)
        total = time.perf_counter() - t_all
        graphs = _graph_count() - graphs_before if s.compile else 0
        limit = int(getattr(dynamo_config, "recompile_limit", getattr(dynamo_config, "cache_size_limit", 8)))
        run = GenerationRun(settings=s.to_dict(), tokens=out_tokens, padded_lengths=padded, ttft_s=ttft, tpot_s=tpot,
                            total_s=total, new_tokens=new_tokens, graphs=graphs, graphs_after_call=graphs_after_call,
                            cache_len=gen_kw.get("max_cache_len"))
        if run.cache_len is not None and max(padded) + new_tokens > run.cache_len:
            run.notes.append(f"prompts padded to {max(padded)} tokens need a cache of {max(padded) + new_tokens} > max_cache_len "
                             f"{run.cache_len}: the cache grew (new graphs); make the largest bucket cover the longest prompt")
        if s.compile and _recompile_limit_hits() > limit_hits_before:
            run.recompile_limit_hit = True
            run.notes.append(f"dynamo's recompile limit ({limit}) was reached: further shapes ran uncompiled (eager)")
        return run


def reset_compiler() -> None:
    """Forget compiled graphs and zero dynamo's counters (between variants that are compared)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def greedy_agreement(reference: list[list[int]], tokens: list[list[int]]) -> dict[str, Any]:
    """The decoder gate: identical greedy tokens to the eager reference, prompt by prompt.

    `prefix_agreement`: the fraction of the reference's tokens generated before each prompt's first mismatch (1.0
    when identical): how close a variant that fails the gate came (greedy decoding diverges for good after one
    different token, so later matches are not counted)."""
    same = [a == b for a, b in zip(reference, tokens, strict=False)]  # unequal counts fail `passed` below
    first_diff = []
    for a, b in zip(reference, tokens, strict=False):
        first_diff.append(next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None if len(a) == len(b) else min(len(a), len(b))))
    total = sum(len(a) for a in reference)
    kept = sum(len(a) if d is None else d for a, d in zip(reference, first_diff, strict=False))
    return {"identical_prompts": sum(same), "prompts": len(same), "passed": all(same) and len(reference) == len(tokens),
            "first_mismatch_position": first_diff, "prefix_agreement": kept / total if total else 1.0}
