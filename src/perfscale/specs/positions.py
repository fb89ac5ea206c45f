"""How far a model's positions go: a learned table ends at max_position_embeddings; rotary and ALiBi
positions run past it (with quality loss unless RoPE scaling is configured).

Read from the model itself, not from a family list, so a model type we have never seen is judged
by what it builds: a config that names a rotary or ALiBi scheme is extrapolating; otherwise the
model is built on the meta device (no memory) and a position Embedding of max_positions rows
(GPT-2 `wpe`, OPT `embed_positions` with its offset of 2, BERT `position_embeddings`; any embedding
of that size that is not the vocabulary's) is learned.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from perfscale.errors import InvalidConfigError
from perfscale.specs.model import ModelSpec

# Config attributes (transformers 5 names and older ones) that mean rotary positions.
_ROTARY_FIELDS = ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct", "rotary_emb_base",
                  "partial_rotary_factor", "rotary_emb_fraction")


@dataclass(frozen=True)
class PositionLimit:
    kind: str  # learned | rotary | alibi | relative | none
    max_positions: int | None

    @property
    def hard(self) -> bool:
        return self.kind == "learned" and self.max_positions is not None


def position_limit(spec: ModelSpec) -> PositionLimit:
    return _position_limit(spec.location, spec.name, spec.architecture, spec.max_positions, _frozen(spec.config))


def check_length(spec: ModelSpec, tokens: int, what: str) -> str | None:
    """Raise when `tokens` positions exceed a learned table; return a warning when they exceed a
    rotary/ALiBi model's trained length; None when they fit."""
    if spec.max_positions is None or tokens <= spec.max_positions:
        return None  # decided without building anything
    limit = position_limit(spec)
    if limit.hard:
        raise InvalidConfigError(
            f"{what} = {tokens:,} tokens exceeds the {limit.max_positions:,} learned positions of {spec.name}: its "
            f"position table has no row beyond {limit.max_positions:,}. Use at most {limit.max_positions:,} tokens."
        )
    scaled = bool(spec.config.get("rope_scaling") or (spec.config.get("rope_parameters") or {}).get("rope_type")
                  not in (None, "default"))
    how = ("its rope scaling is configured, so quality past it depends on that scaling" if scaled else
           "set rope scaling (e.g. rope_type yarn or dynamic) in the config to extend it; unscaled, quality degrades")
    return (f"{what} = {tokens:,} tokens is past the {limit.max_positions:,} positions {spec.name} was trained on "
            f"({limit.kind} positions extrapolate; {how}).")


def check_workload_length(spec: ModelSpec, workload) -> str | None:
    """check_length for a training step (--seq) or a generation (--prompt + --new-tokens)."""
    if workload.mode == "train":
        return check_length(spec, workload.seq, f"--seq {workload.seq}")
    return check_length(spec, workload.prompt + workload.new_tokens,
                        f"--prompt {workload.prompt} + --new-tokens {workload.new_tokens}")


def _frozen(config: dict) -> str:
    import json

    return json.dumps(config, sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _position_limit(location: str, name: str, architecture: str, max_positions: int | None, config_json: str) -> PositionLimit:
    import json

    from perfscale.specs.model import make_config_object

    if max_positions is None:
        return PositionLimit("none", None)
    cfg = make_config_object(json.loads(config_json), location)
    if any(getattr(cfg, f, None) for f in _ROTARY_FIELDS) or getattr(cfg, "position_embedding_type", "") == "rotary":
        return PositionLimit("rotary", max_positions)
    if getattr(cfg, "alibi", False) or cfg.model_type in ("bloom", "mpt"):
        return PositionLimit("alibi", max_positions)
    learned = _has_position_table(cfg, architecture, max_positions)
    return PositionLimit("learned" if learned else "relative", max_positions)


def _has_position_table(cfg, architecture: str, max_positions: int) -> bool:
    import torch

    from perfscale.specs.param_count import build_meta_model

    model = build_meta_model(cfg, architecture or None)
    vocab = getattr(cfg, "vocab_size", None)
    return any(
        isinstance(m, torch.nn.Embedding) and m.num_embeddings != vocab
        and 0 <= m.num_embeddings - max_positions <= 2 and not any(w in name.lower() for w in ("word", "token_type"))
        for name, m in model.named_modules()
    )


__all__ = ["PositionLimit", "check_length", "check_workload_length", "position_limit"]
