"""Generation runtime: KV cache kind, torch.compile of the forward, batch size, prompt-length buckets.

Why buckets: a compiled model specialises on shapes. With `dynamic=False`, every new prompt
length is a new prefill graph (and with a static cache, a new cache length too), so serving
prompts of many lengths recompiles again and again until dynamo's recompile limit (8), after
which that code runs uncompiled. Left-padding each prompt up to the smallest bucket >= its length
bounds the shapes to the number of buckets (the guides' "static shapes with padding buckets",
from the XLA/TPU advice). The cost: the padded tokens are computed too.

Measured per call: TTFT (prefill plus the first token), time per output token after the first,
tokens/s, and the number of graphs dynamo compiled (torch._dynamo counters: stats.unique_graphs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.errors import InvalidConfigError, UnsupportedModelError, choice_error

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
    """Prompt lengths are left-padded up to the smallest bucket >= length; None: no bucketing."""
    attn: str = "sdpa"

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

    def label(self) -> str:
        parts = [("compile" + ("" if self.compile_backend == "inductor" else f"[{self.compile_backend}]")) if self.compile else "eager",
                 f"{self.cache}-cache", f"b{self.batch}"]
        if self.buckets:
            parts.append("buckets" + ",".join(map(str, self.buckets)) if len(self.buckets) <= 3 else f"buckets{self.buckets[0]}..{self.buckets[-1]}")
        return " ".join(parts)

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"do_sample": False}
        if self.cache == "static":
            kw["cache_implementation"] = "static"
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
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class DecoderRunner:
    """A model plus DecoderSettings: `run(prompts, new_tokens)` -> GenerationRun."""

    def __init__(self, model, settings: DecoderSettings) -> None:
        import torch

        self.model = model
        self.settings = settings
        self._eager_forward = model.forward
        if settings.compile:
            model.forward = torch.compile(model.forward, backend=settings.compile_backend, dynamic=False)

    def close(self) -> None:
        """Put the model's eager forward back (the runner compiled a wrapper around it)."""
        self.model.forward = self._eager_forward

    def run(self, prompts: list[list[int]], new_tokens: int) -> GenerationRun:
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
        graphs_before = _graph_count()
        t_all = time.perf_counter()
        for start in range(0, len(prompts), s.batch):
            idx = list(range(start, min(start + s.batch, len(prompts))))
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
                    pad_token_id=pad, logits_processor=LogitsProcessorList([Stamp()]), **s.generate_kwargs(),
                )
            end = time.perf_counter()
            ttft.append(stamps[0] - t0 if stamps else end - t0)
            tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0)
            for row, i in enumerate(idx):
                out_tokens[i] = out[row, length:].tolist()
        total = time.perf_counter() - t_all
        graphs = _graph_count() - graphs_before if s.compile else 0
        limit = int(getattr(dynamo_config, "recompile_limit", getattr(dynamo_config, "cache_size_limit", 8)))
        run = GenerationRun(settings=s.to_dict(), tokens=out_tokens, padded_lengths=padded, ttft_s=ttft, tpot_s=tpot,
                            total_s=total, new_tokens=new_tokens, graphs=graphs)
        if s.compile and _graph_count() >= limit:
            run.recompile_limit_hit = True
            run.notes.append(f"dynamo's recompile limit ({limit}) was reached: further shapes run uncompiled")
        return run


def reset_compiler() -> None:
    """Forget compiled graphs and zero dynamo's counters (between variants that are compared)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def greedy_agreement(reference: list[list[int]], tokens: list[list[int]]) -> dict[str, Any]:
    """The decoder gate: identical greedy tokens to the eager reference, prompt by prompt."""
    same = [a == b for a, b in zip(reference, tokens)]
    first_diff = []
    for a, b in zip(reference, tokens):
        first_diff.append(next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b))))
    return {"identical_prompts": sum(same), "prompts": len(same), "passed": all(same) and len(reference) == len(tokens),
            "first_mismatch_position": first_diff}
