"""Exact parameter counts per component, from the real transformers class on the meta device.

No weights are allocated (`torch.device("meta")`), so a 405B model is counted in seconds.
Tied embeddings are tied the way `from_pretrained` ties them and counted once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from perfscale.errors import UnsupportedModelError

COMPONENTS = ("embeddings", "attention", "mlp", "norms", "lm_head", "other")

# Module path pieces that mark attention / feed-forward blocks across the covered families
# (GPT-2 attn, Llama self_attn, T5 SelfAttention/EncDecAttention, BERT attention, Falcon
# self_attention; GPT-2/Llama mlp, T5 DenseReluDense, Mixtral block_sparse_moe, OPT fc1/fc2,
# BERT intermediate and layer.N.output).
_ATTENTION = re.compile(r"(^|\.)(attn|self_attn|attention|self_attention|selfattention|encdecattention|crossattention|cross_attn)(\.|$)", re.I)
_MLP = re.compile(r"(^|\.)(mlp|feed_forward|ffn|densereludense|block_sparse_moe|experts|moe|intermediate|fc1|fc2|shared_expert|layer\.\d+\.output)(\.|$)", re.I)


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by component; `total` equals the sum of the components."""

    total: int
    embeddings: int
    attention: int
    mlp: int
    norms: int
    lm_head: int
    other: int

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, **{c: getattr(self, c) for c in COMPONENTS}}


def fingerprint(config: dict[str, Any], class_name: str) -> str:
    """Stable key for a config + model class (what the count depends on)."""
    canonical = json.dumps({"class": class_name, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def model_class(config_obj: Any, class_name: str | None):
    """The transformers class to instantiate: the config's architecture, else the Auto class."""
    import transformers

    if class_name and hasattr(transformers, class_name):
        return getattr(transformers, class_name)
    for auto_name in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModel"):
        auto = getattr(transformers, auto_name)
        if type(config_obj) in auto._model_mapping:
            return auto._model_mapping[type(config_obj)]
    raise UnsupportedModelError(
        f"transformers {transformers.__version__} has no model class for model_type "
        f"{config_obj.model_type!r} (architectures: {class_name!r}). Upgrade transformers, or use "
        "a model whose code ships with transformers (no trust_remote_code)."
    )


def build_meta_model(config_obj: Any, class_name: str | None):
    """Instantiate the real model on the meta device, with weights tied as from_pretrained does."""
    import torch

    cls = model_class(config_obj, class_name)
    with torch.device("meta"):
        model = cls._from_config(config_obj)
    model.tie_weights()
    return model


def _component(path: str, module: Any, output_embeddings: Any) -> str:
    import torch

    if "norm" in type(module).__name__.lower():
        return "norms"
    if output_embeddings is not None and module is output_embeddings:
        return "lm_head"
    if _ATTENTION.search(path):
        return "attention"
    if _MLP.search(path):
        return "mlp"
    if isinstance(module, torch.nn.Embedding):
        return "embeddings"
    return "other"


def count_model(model: Any) -> ParamCounts:
    """Count each distinct parameter once, attributing it to the first module that owns it."""
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen: set[int] = set()
    totals = dict.fromkeys(COMPONENTS, 0)
    for path, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            totals[_component(path, module, output_embeddings)] += param.numel()
    return ParamCounts(total=sum(totals.values()), **totals)
