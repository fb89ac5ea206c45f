"""What the scenarios share: the Scenario interface, device handling, model building, FLOP counts.

A scenario is built inside the worker process by `setup(config, device)` and then driven by the
worker's timing loop: `step()` once per iteration, `outputs()` once for the accuracy gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfscale.config.precision import Precision
from perfscale.errors import UnsupportedModelError


@dataclass
class Scenario:
    """A ready-to-run benchmark step and the quantities needed to turn its time into rates."""

    step: Any  # callable: one iteration, no device sync (the worker syncs)
    samples_per_iter: int  # sequences / sentences / prompts processed per iteration
    tokens_per_iter: int  # tokens processed (train: trained; encode: real tokens; generate: generated)
    flops_per_iter: float | None  # model FLOPs of one iteration (for MFU), None if unknown
    peak_dtype: str  # which hardware peak MFU is measured against
    torch_memory: bool = True  # False when tensors live outside torch (ONNX Runtime)
    outputs: Any = None  # callable -> dict[str, np.ndarray] for the accuracy gate (inference)
    iteration_metrics: Any = None  # callable -> dict[str, float] after each step (generate: ttft, tpot)
    setup_metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedModelError("device cuda was asked for but torch sees no CUDA device here: use --device cpu or auto.")
    return device


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def set_tf32(enabled: bool) -> None:
    """RunConfig.tf32 as TrainingArguments(tf32=True) sets it: fp32 matmuls and convolutions on TF32 tensor cores
    (CUDA only; torch ignores the flags elsewhere). Off is the Trainer's default (tf32=None): torch's own defaults,
    matmuls in full fp32 and cuDNN's convolutions allowed TF32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = True


def peak_dtype(precision: Precision, device: str) -> str:
    """The hardware peak an MFU figure divides by: the dtype the matmuls run in."""
    base = precision.peak_key
    if base == "fp32" and device == "cuda":
        import torch

        # fp32 matmuls use TF32 tensor cores only when allowed (torch default: not allowed).
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return base


# The Auto class of each task head a train bench builds from the config's architectures[0] (specs/heads.py);
# a base model or a causal LM trains as a causal LM, an encoder without a head with a masked-LM head.
HEAD_AUTO_CLASSES = {"masked-lm": "AutoModelForMaskedLM", "sequence-classification": "AutoModelForSequenceClassification",
                     "token-classification": "AutoModelForTokenClassification",
                     "question-answering": "AutoModelForQuestionAnswering", "multiple-choice": "AutoModelForMultipleChoice"}


def lm_auto_class(spec, scenario: str) -> str:
    """The transformers Auto class a train/generate bench builds for this model (UnsupportedModelError
    when none fits); the parent checks it before any worker starts (measure/preflight.py)."""
    arch = spec.architecture
    if scenario == "train" and spec.task in HEAD_AUTO_CLASSES:  # the config's head, trained as the Trainer would
        return HEAD_AUTO_CLASSES[spec.task]
    if spec.is_encoder_decoder:
        raise UnsupportedModelError(f"{spec.name} ({arch}) is an encoder-decoder; bench train/generate supports decoder LMs and (train) encoders.")
    if arch.endswith("ForCausalLM") or spec.model_type in ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "falcon", "gpt_neox", "opt", "mixtral"):
        return "AutoModelForCausalLM"
    if scenario == "train":
        return "AutoModelForMaskedLM"  # encoders train with a masked-LM head (labels = inputs)
    raise UnsupportedModelError(f"{spec.name} ({arch}) has no causal LM head: generate needs a decoder model (e.g. perfscale-tiny-llama).")


def build_lm(model: str, scenario: str, precision: Precision, attn: str, device: str, seed: int):
    """A language model for train/generate: pretrained weights from a local folder that has them,
    else random weights from the config (catalogue / hub config) with a fixed seed, stored in the
    precision's weight dtype (fp32 master weights under "-mixed")."""
    import os

    import torch
    import transformers

    from perfscale.specs import load_model_spec

    spec = load_model_spec(model)
    config = spec.config_object()
    auto = getattr(transformers, lm_auto_class(spec, scenario))
    dtype = precision.torch_weight_dtype()
    # A local model's location is its config.json (or the folder); the weights sit beside it.
    folder = spec.location if os.path.isdir(spec.location) else os.path.dirname(spec.location)
    has_weights = bool(folder) and any(
        os.path.exists(os.path.join(folder, f)) for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )
    torch.manual_seed(seed)
    try:
        if has_weights:
            m = auto.from_pretrained(folder, dtype=dtype, attn_implementation=attn)
        else:
            m = auto.from_config(config, dtype=dtype, attn_implementation=attn)
    except (ValueError, ImportError) as exc:
        raise UnsupportedModelError(f"Cannot build {spec.name} with attn={attn!r}: {exc}") from exc
    return spec, m.to(device)


# ----- FLOPs (model FLOPs, no recomputation) -----
# PaLM (Chowdhery et al. 2022, appendix B): training FLOPs per token = 6N + 12*L*H*Q*T, where N are the
# non-embedding parameters, L layers, H heads, Q head dim, T the attention context (no causal
# discount). Forward alone is a third: 2N + 4*L*H*Q*T. LoRA (frozen base): no weight gradients, so
# backward costs ~1x forward instead of 2x (Kaplan et al. 2020 split backward evenly between
# activation and weight gradients): 4N + 8*L*H*Q*T.
def matmul_params(spec) -> int:
    """Parameters that take part in matmuls per token: all but the embedding tables."""
    return spec.params.total - spec.params.embeddings


def attention_width(spec) -> int:
    return spec.num_layers * spec.num_heads * spec.head_dim


def forward_flops(spec, tokens: int, context: float) -> float:
    return tokens * (2 * matmul_params(spec) + 4 * attention_width(spec) * context)


def train_flops(spec, tokens: int, context: int, lora: bool) -> float:
    factor = 2 if lora else 3  # forward + backward (backward = 1x forward with frozen weights, else 2x)
    return factor * forward_flops(spec, tokens, context)


def generate_flops(spec, batch: int, prompt: int, new_tokens: int) -> float:
    """Prefill of the prompt (context = prompt) + each decode step t (context = prompt + t).
    transformers' prefill computes logits for the last position only, which the lm_head term overcounts
    by (prompt-1) x 2 x hidden x vocab; kept for simplicity, noted in the report."""
    prefill = forward_flops(spec, batch * prompt, prompt)
    decode = sum(forward_flops(spec, batch, prompt + t) for t in range(1, new_tokens))
    return prefill + decode
