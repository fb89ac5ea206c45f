"""Precision: what a precision name means, decoded here once; every engine reads this object.

A name is the user-facing value of `RunConfig.precision` (and the key of the engines' per-precision
tables). Plain dtypes ("fp32", "bf16", "fp16") keep weights, gradients and optimizer states in that
dtype and run the matmuls in it. "-mixed" is torch autocast (Micikevicius et al. 2018, "Mixed
Precision Training"): fp32 master weights, gradients and states, the matmuls autocast to the 16-bit
dtype; fp16 needs loss scaling there (its 5-bit exponent underflows small gradients), bf16 does not.

Objects are built once per name at import (`Precision.of` is a dict lookup), so the plan search's
hot path reads fields without paying for construction. torch dtypes are imported on demand only:
the config layer does not import torch (nor any engine) to be used.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfscale.errors import InvalidConfigError

# Bytes per element of each dtype name.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# dtype name -> attribute of the torch module (looked up lazily).
_TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True, slots=True)
class Precision:
    """One precision: the dtype the weights are stored in and the dtype the matmuls run in."""

    name: str  # the user-facing value: fp32 | bf16 | fp16 | bf16-mixed | fp16-mixed
    weight_dtype: str  # parameters, gradients, optimizer states (fp32 master weights under "-mixed")
    compute_dtype: str  # the matmuls' dtype: the 16-bit one under autocast
    weight_bytes: int  # bytes per element of weight_dtype (also the residual stream's dtype)
    compute_bytes: int  # bytes per element of compute_dtype

    @property
    def mixed(self) -> bool:
        """torch autocast: fp32 weights, 16-bit matmuls."""
        return self.weight_dtype != self.compute_dtype

    @property
    def autocast_dtype(self) -> str | None:
        """The dtype torch.autocast runs in, or None when there is no autocast."""
        return self.compute_dtype if self.mixed else None

    @property
    def peak_key(self) -> str:
        """The key of the hardware catalogue's peak FLOP/s that applies to the matmuls."""
        return self.compute_dtype

    @property
    def loss_scaling(self) -> bool:
        """fp16 autocast needs a GradScaler (bf16 has fp32's exponent range and does not)."""
        return self.mixed and self.compute_dtype == "fp16"

    @property
    def is_fp32(self) -> bool:
        """Weights and matmuls in fp32: the reference the other precisions are gated against."""
        return self.weight_dtype == "fp32" and self.compute_dtype == "fp32"

    def in_dtype(self, dtype: str) -> Precision:
        """The same kind of precision (autocast or plain) in another dtype: fp16-mixed.in_dtype("bf16") is
        bf16-mixed, fp16.in_dtype("bf16") is bf16 (what `debug overflow` checks as a fix)."""
        if dtype not in DTYPE_BYTES:
            raise InvalidConfigError(f"dtype {dtype!r} is not one of: {', '.join(DTYPE_BYTES)}")
        return PRECISIONS[MIXED_OF[dtype] if self.mixed and dtype != "fp32" else dtype]

    @property
    def low_precision_weights(self) -> bool:
        """Weights stored in 16 bits (pure bf16 / fp16)."""
        return self.weight_bytes < 4

    @property
    def torch_weight_dtype_name(self) -> str:
        """The torch attribute name of the weight dtype ("bfloat16"), for emitted source text."""
        return _TORCH_NAMES[self.weight_dtype]

    def torch_weight_dtype(self):
        return torch_dtype(self.weight_dtype)

    def torch_compute_dtype(self):
        return torch_dtype(self.compute_dtype)

    def torch_autocast_dtype(self):
        """torch dtype for torch.autocast, or None without autocast."""
        return torch_dtype(self.compute_dtype) if self.mixed else None

    @classmethod
    def of(cls, value: str | Precision) -> Precision:
        """The Precision of a name (or the object itself); an unknown name lists the valid ones."""
        if isinstance(value, Precision):
            return value
        found = PRECISIONS.get(value)
        if found is None:
            raise InvalidConfigError(f"precision {value!r} is not one of: {', '.join(TRAIN_PRECISIONS)}")
        return found

    def __str__(self) -> str:
        return self.name


def torch_dtype(name: str):
    """The torch dtype of a dtype name ("fp32" | "bf16" | "fp16"); imports torch."""
    import torch

    return getattr(torch, _TORCH_NAMES[name])


def _make(name: str, weight: str, compute: str) -> Precision:
    return Precision(name, weight, compute, DTYPE_BYTES[weight], DTYPE_BYTES[compute])


# The choices, defined once. Training takes all five; inference runs a plain dtype.
PRECISIONS: dict[str, Precision] = {
    p.name: p for p in (
        _make("fp32", "fp32", "fp32"),
        _make("bf16", "bf16", "bf16"),
        _make("fp16", "fp16", "fp16"),
        _make("bf16-mixed", "fp32", "bf16"),
        _make("fp16-mixed", "fp32", "fp16"),
    )
}
TRAIN_PRECISIONS = tuple(PRECISIONS)
INFER_PRECISIONS = tuple(name for name, p in PRECISIONS.items() if not p.mixed)
# The autocast precision whose 16-bit dtype is `dtype` ("bf16" -> "bf16-mixed").
MIXED_OF = {p.compute_dtype: p.name for p in PRECISIONS.values() if p.mixed}


__all__ = ["DTYPE_BYTES", "INFER_PRECISIONS", "MIXED_OF", "PRECISIONS", "TRAIN_PRECISIONS", "Precision", "torch_dtype"]
