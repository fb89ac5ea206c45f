"""Build the real transformers model with fake weights: no memory, any size, any dtype.

The model is built on the meta device in the target dtype (weights tied the way `from_pretrained`
ties them, LoRA adapters added by peft there), then every meta parameter and buffer is replaced by
a fake tensor of the same shape and dtype on the trace device, shared parameters kept shared.
Why meta-then-fake (FIELD-NOTES): `.to(dtype)` fails on fake-built models and peft moves adapters
with `.to`, so nothing may be moved after the fake tensors exist.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.specs.model import ModelSpec

# Config fields that list one entry per layer and must be cut when tracing fewer layers.
_PER_LAYER_LISTS = ("layer_types", "block_types", "attention_types_per_layer")


def layer_count_key(config_obj: Any) -> str | None:
    """The config attribute holding the repeated-layer count (None: no single stack to repeat)."""
    if getattr(config_obj, "is_encoder_decoder", False):
        return None
    return "num_hidden_layers" if hasattr(config_obj, "num_hidden_layers") else None


def layers_identical(config_obj: Any) -> bool:
    """Whether every layer of the stack runs the same code on the same shapes (repeat.py's premise)."""
    for name in _PER_LAYER_LISTS:
        values = getattr(config_obj, name, None)
        if isinstance(values, (list, tuple)) and len(set(map(str, values))) > 1:
            return False
    return True


def make_config(spec: ModelSpec, config: RunConfig, num_layers: int | None = None):
    """The transformers config for this run, optionally cut to `num_layers` repeated layers."""
    cfg = spec.config_object()
    cfg._attn_implementation = config.attn
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = not config.is_train
    if spec.task == "sequence-classification" and getattr(cfg, "pad_token_id", None) is None:
        # Decoder classifiers pool the last non-pad token and refuse batches > 1 without a pad id;
        # fine-tuning sets one (`model.config.pad_token_id = tokenizer.pad_token_id`, usually EOS).
        eos = getattr(cfg, "eos_token_id", None)
        cfg.pad_token_id = (eos[0] if isinstance(eos, (list, tuple)) and eos else eos) if eos is not None else 0
    if num_layers is not None:
        key = layer_count_key(cfg)
        if key is None:
            raise UnsupportedModelError(f"{spec.name}: no single repeated layer stack to cut.")
        full = getattr(cfg, key)
        setattr(cfg, key, num_layers)
        for name in _PER_LAYER_LISTS:
            values = getattr(cfg, name, None)
            if isinstance(values, list) and len(values) == full:
                setattr(cfg, name, values[:num_layers])
    return cfg


def decoder_layers(model: Any) -> list:
    """The repeated blocks: the longest ModuleList of identically-typed modules."""
    import torch

    best: list = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            if len({type(m) for m in module}) == 1 and len(list(module[0].parameters())) > 0:
                best = list(module)
    return best


def _leaf_linear_names(model: Any) -> list[str]:
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear,)) or type(module).__name__ in ("Conv1D",):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _apply_lora(model: Any, config: RunConfig, spec: ModelSpec):
    from peft import LoraConfig, get_peft_model

    available = _leaf_linear_names(model)
    targets = list(config.lora_targets)
    if targets:
        missing = [t for t in targets if not any(re.fullmatch(rf"(.*\.)?{re.escape(t)}", n) for n, _ in model.named_modules())]
        if missing:
            raise InvalidConfigError(
                f"LoRA targets {', '.join(missing)} match no module of {spec.name}. Linear modules there: "
                f"{', '.join(available)}. Pass --lora-targets with some of these."
            )
    lora = LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.0, target_modules=targets or None)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # peft has no default targets for this model type
        raise InvalidConfigError(
            f"LoRA on {spec.name}: {exc}. Name the target modules with --lora-targets (Linear modules: "
            f"{', '.join(available)})."
        ) from exc


def build_meta(spec: ModelSpec, config: RunConfig, num_layers: int | None = None):
    """The real model on the meta device: weights in the run's dtype, tied, LoRA applied, mode set."""
    import torch

    from perfscale.specs.param_count import model_class

    cfg = make_config(spec, config, num_layers)
    dtype = config.prec.torch_weight_dtype()  # fp32 master weights under "-mixed"
    cls = model_class(cfg, spec.architecture)
    try:
        with torch.device("meta"):
            model = cls._from_config(cfg, dtype=dtype, attn_implementation=config.attn)
    except ValueError as exc:
        if "attention implementation" not in str(exc) and "attn_implementation" not in str(exc):
            raise
        other = "eager" if config.attn == "sdpa" else "sdpa"
        raise InvalidConfigError(
            f"{spec.name} ({spec.architecture}) does not support attn {config.attn!r} in transformers: use --attn {other}."
        ) from exc
    model.tie_weights()
    if config.is_train:
        if config.lora:
            model = _apply_lora(model, config, spec)
        if config.checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", True):
                raise InvalidConfigError(f"{spec.name} does not support gradient checkpointing: drop --checkpointing.")
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model.train()
    else:
        model.eval()
    return model


def materialize_fake(model: Any, fake_mode: Any, device: str) -> None:
    """Replace every meta parameter/buffer by a fake tensor on `device` (same shape, dtype, sharing)."""
    import torch

    memo: dict[int, Any] = {}
    with fake_mode:
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                if id(param) not in memo:
                    data = torch.empty(param.shape, dtype=param.dtype, device=device)
                    memo[id(param)] = torch.nn.Parameter(data, requires_grad=param.requires_grad)
                module._parameters[name] = memo[id(param)]
            for name, buf in list(module._buffers.items()):
                if buf is None:
                    continue
                if id(buf) not in memo:
                    memo[id(buf)] = torch.empty(buf.shape, dtype=buf.dtype, device=device)
                module._buffers[name] = memo[id(buf)]
            for name, value in list(vars(module).items()):  # plain tensor attributes (e.g. Gemma's embed scale)
                if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter) and value.device.type == "meta":
                    if id(value) not in memo:
                        memo[id(value)] = torch.empty(value.shape, dtype=value.dtype, device=device)
                    setattr(module, name, memo[id(value)])


def new_fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


@contextlib.contextmanager
def fake_mode_for(mode, device: str):
    """Enter `mode` with `device` as the default device (tensors created in forward land there)."""
    import torch

    with mode, torch.device(device):
        yield mode


@contextlib.contextmanager
def real_data_branches():
    """Make transformers take, on fake tensors, the branches it takes on the real data we stand for.

    transformers cannot read fake values, so it treats them like a compiler trace
    (`is_tracing(tensor)` is True for fake tensors) and materialises attention masks that a real
    run skips: Qwen2-style models detect "packed sequences" from position_ids, static caches pass a
    tensor offset. Our inputs are unpadded, unpacked batches, for which a real run (i) finds no
    packed sequences and (ii) skips the causal mask whenever q_len == 1, kv_len == q_len or the
    cache is empty (prefill), and lets SDPA use is_causal. Measured here: Qwen2 tiny step +2.2 %
    without this, exact with it. Scoped patch, restored on exit.
    """
    import torch
    from transformers import masking_utils as mu

    original_ignore = mu._ignore_causal_mask_sdpa
    original_packed = mu.find_packed_sequence_indices

    def ignore_causal(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size=None):
        if padding_mask is not None:
            return original_ignore(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size)
        if local_attention_size is not None and kv_length >= local_attention_size:
            return False
        if q_length == 1 or kv_length == q_length:
            return True
        # A tensor offset comes from a static cache; the only multi-token forward we run on one is the prefill.
        offset = 0 if isinstance(q_offset, torch.Tensor) else q_offset
        return offset == 0

    mu._ignore_causal_mask_sdpa = ignore_causal
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu._ignore_causal_mask_sdpa = original_ignore
        mu.find_packed_sequence_indices = original_packed


def build_fake(spec: ModelSpec, config: RunConfig, fake_mode: Any, device: str, num_layers: int | None = None):
    """Call outside the fake mode: meta construction must not see it (Gemma builds scalar buffers)."""
    model = build_meta(spec, config, num_layers)
    materialize_fake(model, fake_mode, device)
    return model


__all__ = ["build_fake", "build_meta", "decoder_layers", "fake_mode_for", "new_fake_mode", "real_data_branches", "layers_identical", "make_config"]
