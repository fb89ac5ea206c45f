"""The knobs of one configuration as a plain object: what the hot path reads (no validation).

RunConfig validates once where the user builds it; the search builds thousands of these directly.
"""

from __future__ import annotations

from perfscale.config.optimizer import DEFAULT_OPTIMIZER, OPTIMIZER_ALIASES
from perfscale.config.precision import PRECISIONS


class Knobs:
    FIELDS = (
        "mode", "batch", "seq", "accum", "prompt", "new_tokens", "precision", "optimizer", "checkpointing",
        "attn", "lora_r", "lora_targets", "zero", "fsdp", "tp", "pp", "offload", "quantization", "cache",
        "kv_cache_dtype", "compile", "sequence_parallel", "selective", "pp_virtual", "pp_embed_slots", "fused",
    )
    # prec: the decoded `precision` (config/precision.py), one shared object per name, kept in step
    # with `precision` by __init__ and copy (a dict lookup: the hot path builds no Precision).
    __slots__ = FIELDS + ("prec",)

    def __init__(self, mode="train", batch=1, seq=512, accum=1, prompt=0, new_tokens=0, precision="fp32",
                 optimizer=DEFAULT_OPTIMIZER, checkpointing=False, attn="sdpa", lora_r=None, lora_targets=(), zero=0,
                 fsdp=None, tp=1, pp=1, offload="none", quantization="none", cache="dynamic",
                 kv_cache_dtype="auto", compile=False, sequence_parallel=False, selective=False, pp_virtual=1,
                 pp_embed_slots=False, fused=False):
        self.mode, self.batch, self.seq, self.accum = mode, batch, seq, accum
        self.prompt, self.new_tokens = prompt, new_tokens
        self.precision, self.checkpointing, self.attn = precision, checkpointing, attn
        self.prec = PRECISIONS[precision]
        self.optimizer = OPTIMIZER_ALIASES.get(optimizer, optimizer)
        self.lora_r, self.lora_targets = lora_r, tuple(lora_targets)
        self.zero, self.fsdp, self.tp, self.pp, self.offload = zero, fsdp, tp, pp, offload
        self.quantization, self.cache, self.kv_cache_dtype, self.compile = quantization, cache, kv_cache_dtype, compile
        self.sequence_parallel, self.selective = sequence_parallel, selective
        # pp_virtual: interleaved 1F1B chunks per device; pp_embed_slots: the embedding and the
        # head/loss each take one layer slot of the pipeline split (Megatron-LM
        # --account-for-embedding/loss-in-pipeline-split; Llama 3 section 3.3.2); fused: fused
        # RMSNorm + SwiGLU kernels (Liger-Kernel / Megatron-LM + TransformerEngine), see families.py.
        self.pp_virtual, self.pp_embed_slots, self.fused = pp_virtual, pp_embed_slots, fused

    def copy(self, **changes) -> Knobs:
        new = Knobs.__new__(Knobs)
        for name in Knobs.__slots__:
            setattr(new, name, changes.get(name, getattr(self, name)))
        if "precision" in changes:
            new.prec = PRECISIONS[new.precision]
        if "optimizer" in changes:
            new.optimizer = OPTIMIZER_ALIASES.get(new.optimizer, new.optimizer)
        return new

    @classmethod
    def from_run_config(cls, config) -> Knobs:
        wl = config.workload
        train = config.is_train
        extra = config.extra or {}
        return cls(
            mode="train" if train else "infer",
            batch=wl.batch,
            seq=wl.seq if train else wl.prompt + wl.new_tokens,
            accum=wl.grad_accum if train else 1,
            prompt=0 if train else wl.prompt,
            new_tokens=0 if train else wl.new_tokens,
            precision=config.precision, optimizer=config.optimizer, checkpointing=config.checkpointing,
            attn=config.attn, lora_r=config.lora_r, lora_targets=config.lora_targets, zero=config.zero,
            fsdp=config.fsdp, tp=config.tp, pp=config.pp, offload=config.offload,
            quantization=config.quantization, cache=config.cache, kv_cache_dtype=config.kv_cache_dtype,
            compile=config.compile, sequence_parallel=bool(extra.get("sequence_parallel", False)),
            selective=extra.get("recompute") == "selective", pp_virtual=config.pp_virtual,
            pp_embed_slots=bool(extra.get("pp_embedding_as_layer", False)), fused=bool(extra.get("fused_kernels", False)),
        )

    def to_run_config(self):
        from perfscale.config.run_config import RunConfig
        from perfscale.specs.workload import InferWorkload, TrainWorkload

        if self.mode == "train":
            wl = TrainWorkload(batch=self.batch, seq=self.seq, grad_accum=self.accum)
        else:
            wl = InferWorkload(batch=self.batch, prompt=self.prompt, new_tokens=self.new_tokens)
        extra = {}
        if self.sequence_parallel:
            extra["sequence_parallel"] = True
        if self.selective:
            extra["recompute"] = "selective"
        if self.pp_embed_slots:
            extra["pp_embedding_as_layer"] = True
        if self.fused:
            extra["fused_kernels"] = True
        return RunConfig(
            workload=wl, precision=self.precision, optimizer=self.optimizer, checkpointing=self.checkpointing,
            attn=self.attn, lora_r=self.lora_r, lora_targets=self.lora_targets, zero=self.zero, fsdp=self.fsdp,
            tp=self.tp, pp=self.pp, offload=self.offload, compile=self.compile, quantization=self.quantization,
            cache=self.cache, kv_cache_dtype=self.kv_cache_dtype, extra=extra, pp_virtual=self.pp_virtual,
        )

    def as_dict(self) -> dict:
        data = {name: getattr(self, name) for name in Knobs.FIELDS}
        data["lora_targets"] = list(self.lora_targets)
        if self.mode == "train":
            for k in ("prompt", "new_tokens", "cache", "kv_cache_dtype"):
                data.pop(k)
        else:
            for k in ("seq", "accum", "optimizer", "checkpointing", "zero", "fsdp", "offload", "selective", "pp_virtual",
                      "pp_embed_slots"):
                data.pop(k)
        return data
