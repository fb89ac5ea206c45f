"""Optimizer names: transformers' `TrainingArguments(optim=...)` values, and how the Trainer builds each.

The values are the Trainer's own names, so an exported `optim=` is the value itself. perfscale's
earlier names stay accepted as aliases and normalise to the Trainer name. Every engine (trace,
measure, estimate) builds or models the optimizer exactly as `Trainer.get_optimizer_cls_and_kwargs`
does for that name (transformers 5.x, trainer_optimizer.py), on the device the program runs on:

  adamw_torch        torch.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8), torch's default
                     implementation for the device: foreach (multi-tensor) on CUDA, the per-parameter
                     loop on CPU. Foreach holds one extra state-sized list during the step (the
                     denominator sqrt(v) + eps for all parameters at once; FIELD-NOTES: +14.6% peak
                     for a 1.4B model); the loop holds one parameter's worth at a time.
  adamw_torch_fused  the same with fused=True (one kernel, no full-size temporaries): the default
                     of TrainingArguments() in transformers 5.x.
  sgd                torch.optim.SGD(lr): no momentum (the Trainer passes none unless optim_args
                     says so), hence no state.
  adafactor          transformers.optimization.Adafactor(lr, scale_parameter=False,
                     relative_step=False): factored second moment, no first moment (beta1=None).
  adamw_bnb_8bit     bitsandbytes.optim.AdamW(lr, betas, eps, optim_bits=8, is_paged=False): two
                     8-bit states (needs bitsandbytes; CUDA).

Not modelled: the Trainer splits parameters into a weight-decay group and a no-decay group (biases
and norms); foreach's temporary then covers one group at a time, smaller by the no-decay
parameters (norm weights and biases, well under 1% of a transformer's).
"""

from __future__ import annotations

# The choices, defined once (Trainer `optim` names).
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "sgd", "adafactor", "adamw_bnb_8bit")
# TrainingArguments().optim in transformers 5.x (checked: OptimizerNames.ADAMW_TORCH_FUSED).
DEFAULT_OPTIMIZER = "adamw_torch_fused"
# Names accepted and normalised: perfscale's earlier names, and the Trainer's own alias
# (`adamw_8bit` builds the same bitsandbytes AdamW as `adamw_bnb_8bit`).
OPTIMIZER_ALIASES = {
    "adamw": "adamw_torch", "adamw-fused": "adamw_torch_fused", "adamw-8bit": "adamw_bnb_8bit",
    "adamw_8bit": "adamw_bnb_8bit",
}
# Implementations of one algorithm (AdamW): swapping them changes speed and memory, not training.
ADAMW = ("adamw_torch_fused", "adamw_torch")
# Adaptive optimizers (per-parameter second moments): pure fp16 weights lose their updates.
ADAPTIVE = ("adamw_torch_fused", "adamw_torch", "adafactor", "adamw_bnb_8bit")
# Devices whose tensors torch's optimizers default to foreach on (torch.optim.optimizer.
# _get_foreach_kernels_supported_devices: cuda, xpu, mtia, privateuseone); CPU runs the loop.
FOREACH_DEVICES = ("cuda", "xpu")
# Learning rate of the optimizers perfscale builds (the Trainer default; memory and time do not depend on it).
LEARNING_RATE = 5e-5


def canonical_optimizer(name: str) -> str:
    """The Trainer name of `name` (an alias resolves; anything else comes back unchanged)."""
    return OPTIMIZER_ALIASES.get(name, name)


def optimizer_choices_text() -> str:
    """The valid values, for help texts and error messages."""
    aliases = ", ".join(f"{old} = {new}" for old, new in OPTIMIZER_ALIASES.items())
    return f"{', '.join(OPTIMIZERS)} (aliases: {aliases})"


def uses_foreach(name: str, device: str) -> bool:
    """Whether the Trainer's optimizer `name` runs torch's multi-tensor (foreach) implementation on `device`."""
    return canonical_optimizer(name) in ("adamw_torch", "sgd") and device in FOREACH_DEVICES


def foreach_copy(name: str, device: str) -> bool:
    """Whether the optimizer step holds one extra state-sized list of all parameters: AdamW's foreach
    step materialises sqrt(v) + eps for every parameter (SGD without momentum updates in place)."""
    return canonical_optimizer(name) == "adamw_torch" and device in FOREACH_DEVICES


def build_optimizer(name: str, params: list, device: str, lr: float = LEARNING_RATE):
    """The torch optimizer the Trainer builds for `name`, as it runs on `device` ("cuda" | "cpu").

    foreach is passed explicitly (torch's default for that device), so that a program traced on
    fake CPU tensors for CUDA gets CUDA's implementation. Raises ImportError for bitsandbytes.
    """
    import torch

    name = canonical_optimizer(name)
    adam = {"betas": (0.9, 0.999), "eps": 1e-8}
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=lr, foreach=uses_foreach(name, device), **adam)
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(params, lr=lr, fused=True, **adam)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=uses_foreach(name, device))
    if name == "adafactor":
        # torch.optim.Adafactor reads its step counter with .item(), which fake tensors cannot; the
        # Trainer builds transformers' own.
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False)
    if name == "adamw_bnb_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW(params, lr=lr, optim_bits=8, is_paged=False, **adam)
    raise ValueError(f"optimizer {name!r} is not one of: {optimizer_choices_text()}")


__all__ = [
    "ADAMW", "ADAPTIVE", "DEFAULT_OPTIMIZER", "FOREACH_DEVICES", "LEARNING_RATE", "OPTIMIZERS", "OPTIMIZER_ALIASES",
    "build_optimizer", "canonical_optimizer", "foreach_copy", "optimizer_choices_text", "uses_foreach",
]
