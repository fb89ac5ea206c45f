"""ModelSpec: the architecture facts every engine needs, from a Hugging Face config.

Field names differ across families (GPT-2 `n_embd`, T5 `d_model`, OPT `ffn_dim`, ...): we read
them through transformers' own config classes and their `attribute_map`, so a family
transformers knows works without a table of our own.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.errors import ConfigFileError, UnsupportedModelError, closest
from perfscale.specs import catalog
from perfscale.specs import heads as task_heads
from perfscale.specs.config_file import ConfigSource, resolve_config
from perfscale.specs.param_count import ParamCounts, build_meta_model, count_model, fingerprint

# Fields every config must give (under its standard name or the family's alias).
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Feed-forward width under each family's name; None means "4 x hidden" (GPT-2, Falcon).
_INTERMEDIATE_NAMES = ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size")
_EXPERT_NAMES = ("num_local_experts", "num_experts", "n_routed_experts")
_EXPERTS_PER_TOKEN_NAMES = ("num_experts_per_tok", "moe_topk", "num_experts_per_token")


@dataclass(frozen=True)
class ModelSpec:
    """What perfscale knows about a model. Sizes are counts; parameters are exact."""

    name: str
    source: str  # catalog | local | hub
    location: str
    hub_id: str | None
    model_type: str
    architecture: str
    is_encoder_decoder: bool
    num_layers: int  # decoder layers for decoder/enc-dec models, encoder layers for encoders
    num_encoder_layers: int | None
    num_decoder_layers: int | None
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    num_experts: int | None
    experts_per_token: int | None
    max_positions: int | None
    params: ParamCounts
    published_params: int | None = None
    published_source: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def family(self) -> str:
        return self.model_type

    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts)

    @property
    def task(self) -> str:
        """The head of `architecture` (specs/heads.py TASKS), or "base" for a model without a head."""
        return task_heads.task_of(self.architecture)

    @property
    def num_labels(self) -> int | None:
        """The classifier's outputs (sequence/token classification heads); None for other heads."""
        return task_heads.num_labels(self.config) if self.task in task_heads.LABELLED_TASKS else None

    def to_dict(self, with_config: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["family"] = self.family
        data["task"] = self.task
        data["num_labels"] = self.num_labels
        if not with_config:
            data.pop("config")
        return data

    def config_object(self):
        """The transformers config object (imports transformers)."""
        return make_config_object(self.config, self.location)


def make_config_object(config: dict[str, Any], location: str):
    from transformers import CONFIG_MAPPING, AutoConfig

    # A deep copy: transformers' config classes rewrite nested fields in place (rope parameters), and
    # the caller's dict is the config as read, which fingerprints and ModelSpec.config must keep.
    values = copy.deepcopy(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ConfigFileError(
            f"Model config {location} has no 'model_type' field, so its architecture is unknown. "
            "Add it (e.g. \"model_type\": \"llama\") or pass a catalogue name (`perfscale models`)."
        )
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        known = list(CONFIG_MAPPING.keys())
        near = closest(str(model_type), known)
        hint = f" Closest: {', '.join(near)}." if near else ""
        raise UnsupportedModelError(
            f"Model config {location}: model_type {model_type!r} is unknown to this transformers version "
            f"(it knows {len(known)} types).{hint} List them all with "
            "`python -c \"import transformers; print(sorted(transformers.CONFIG_MAPPING))\"`; or upgrade transformers."
        )
    _check_sizes(values, CONFIG_MAPPING[model_type], location)
    for key in ("auto_map", "transformers_version", "_name_or_path"):
        values.pop(key, None)
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigFileError(f"Model config {location} is not valid for {model_type!r}: {exc}. Fix the field "
                              "or use the model's full config.json from the Hub.") from exc


# Sizes that must be positive integers when a config gives them (under the standard name or the alias).
_SIZE_FIELDS = (*_REQUIRED, "num_key_value_heads", "head_dim", "max_position_embeddings", *_INTERMEDIATE_NAMES,
                *_EXPERT_NAMES, *_EXPERTS_PER_TOKEN_NAMES)


# The largest size a config may give: real ones stay below ~2^20 (vocabularies of ~256k, contexts of
# ~10M positions); 2^31 keeps every loop over heads or layers bounded.
_MAX_CONFIG_SIZE = 2**31


def _check_sizes(raw: dict[str, Any], config_class: type, location: str) -> None:
    """Every size a positive integer, and heads that divide the width: all problems at once.

    transformers validates some of these only when a model is built, with a traceback; others
    (a negative layer count) it accepts and builds a model of -3 layers.
    """
    aliases = getattr(config_class, "attribute_map", {}) or {}
    problems: list[str] = []
    sizes: dict[str, int] = {}
    for name in _SIZE_FIELDS:
        key = name if name in raw else aliases.get(name, name)
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_CONFIG_SIZE:
            problems.append(f"{key} must be an integer from 1 to {_MAX_CONFIG_SIZE:,}, got {value!r}")
        else:
            sizes[name] = value
    heads, hidden = sizes.get("num_attention_heads"), sizes.get("hidden_size")
    if heads and hidden and "head_dim" not in sizes and hidden % heads:
        problems.append(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and no head_dim is given)")
    kv = sizes.get("num_key_value_heads")
    if heads and kv and heads % kv:
        problems.append(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    if problems:
        raise ConfigFileError(f"Model config {location} has impossible sizes: " + "; ".join(problems)
                              + ". Fix these fields or use the model's full config.json from the Hub.")


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _check_required(raw: dict[str, Any], cfg: Any, location: str) -> None:
    aliases = getattr(type(cfg), "attribute_map", {}) or {}
    missing = [f for f in _REQUIRED if f not in raw and aliases.get(f) not in raw]
    if missing:
        named = [f"{f} (or {aliases[f]})" if f in aliases else f for f in missing]
        raise ConfigFileError(
            f"Model config {location} is incomplete: missing {', '.join(named)}. "
            "Use the model's full config.json from the Hub, or a catalogue name (`perfscale models`)."
        )


def _kv_heads(cfg: Any, heads: int) -> int:
    # Falcon: new_decoder_architecture uses num_kv_heads; multi_query means one KV head.
    if getattr(cfg, "model_type", "") == "falcon":
        if getattr(cfg, "new_decoder_architecture", False):
            return int(cfg.num_kv_heads)
        return 1 if getattr(cfg, "multi_query", False) else heads
    return int(_first(cfg, ("num_key_value_heads", "num_kv_heads")) or heads)


def architecture_fields(cfg: Any, architecture: str | None) -> dict[str, Any]:
    """The ModelSpec fields read off a transformers config object (its class's defaults and aliases
    applied). Also what the shipped cache keeps per catalogue entry (specs/param_cache.py), so that a
    catalogue model is described without importing transformers and torch (seconds of start-up)."""
    hidden = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    enc_dec = bool(getattr(cfg, "is_encoder_decoder", False))
    layers = int(cfg.num_hidden_layers)
    decoder_layers = int(getattr(cfg, "num_decoder_layers", None) or layers) if enc_dec else None
    intermediate = _first(cfg, _INTERMEDIATE_NAMES)
    head_dim = _first(cfg, ("head_dim",)) or hidden // heads
    tie = getattr(cfg, "tie_word_embeddings", None)
    if tie is None:
        tie = bool(getattr(cfg, "tie_encoder_decoder", False))
    return {
        "model_type": cfg.model_type,
        "architecture": architecture or "",
        "is_encoder_decoder": enc_dec,
        "num_layers": decoder_layers if enc_dec else layers,
        "num_encoder_layers": layers if enc_dec else None,
        "num_decoder_layers": decoder_layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": _kv_heads(cfg, heads),
        "head_dim": int(head_dim),
        "intermediate_size": int(intermediate or 4 * hidden),
        "vocab_size": int(cfg.vocab_size),
        "tied_embeddings": bool(tie),
        "num_experts": _first(cfg, _EXPERT_NAMES),
        "experts_per_token": _first(cfg, _EXPERTS_PER_TOKEN_NAMES),
        "max_positions": _first(cfg, ("max_position_embeddings", "n_positions")),
    }


def _cached(raw: dict[str, Any], architecture: str | None) -> tuple[ParamCounts, dict[str, Any] | None] | None:
    """(counts, architecture fields or None) of a catalogue entry from the shipped cache, if it has it."""
    cached = catalog.param_count_cache().get(fingerprint(raw, architecture or ""))
    if not cached:
        return None
    counts = ParamCounts(**{k: v for k, v in cached.items() if not k.startswith("_")})
    return counts, cached.get("_spec")


def spec_from_source(src: ConfigSource) -> ModelSpec:
    raw = src.config
    architectures = raw.get("architectures") or []
    architecture = architectures[0] if architectures else None
    cached = _cached(raw, architecture) if src.kind == "catalog" else None
    if cached is not None and cached[1] is not None:
        # A shipped catalogue entry exactly as counted (the fingerprint covers config and class): its
        # fields were read off transformers' config class when the cache was made, and tests re-read them.
        counts, fields_ = cached
    else:
        cfg = make_config_object(raw, src.location)
        _check_required(raw, cfg, src.location)
        if isinstance(architecture, str):
            task_heads.check_head(raw, task_heads.task_of(architecture), src.location)
        if cached is not None:
            counts = cached[0]
        else:
            model = build_meta_model(cfg, architecture)
            counts, architecture = count_model(model), type(model).__name__
        fields_ = architecture_fields(cfg, architecture)
    return ModelSpec(
        name=src.name,
        source=src.kind,
        location=src.location,
        hub_id=src.hub_id,
        **fields_,
        params=counts,
        published_params=src.published_params,
        published_source=src.published_source,
        config=raw,
    )


def load_model_spec(model: str, task: str | None = None, num_labels: int | None = None) -> ModelSpec:
    """ModelSpec from a catalogue name, a local folder or config.json, or a hub id.

    task: a head (specs/heads.py TASKS) instead of the config's architectures[0]; num_labels: the
    classifier's size (sequence/token classification), instead of the config's."""
    src = resolve_config(model)
    if task is None and num_labels is None:
        return spec_from_source(src)
    return spec_from_source(with_head(src, task, num_labels))


def with_head(src: ConfigSource, task: str | None, num_labels: int | None) -> ConfigSource:
    """The config source with `task`'s head class of its family (and `num_labels`), as from_pretrained
    would build `AutoModelFor<Task>.from_pretrained(..., num_labels=N)`."""
    raw = dict(src.config)
    if task is not None:
        model_type = raw.get("model_type")
        if not isinstance(model_type, str):
            make_config_object(raw, src.location)  # raises the missing / unknown model_type error
        raw["architectures"] = [task_heads.head_class(model_type, task)]
    if num_labels is not None:
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or not 1 <= num_labels <= 2**20:
            raise ConfigFileError(f"num_labels must be an integer from 1 to {2**20:,}, got {num_labels!r}: "
                                  "give the number of classes of your classification task.")
        arch = (raw.get("architectures") or [""])[0]
        if task_heads.task_of(str(arch)) not in task_heads.LABELLED_TASKS:
            raise ConfigFileError(f"num_labels {num_labels} applies to sequence- or token-classification heads, but "
                                  f"{src.location} builds {arch or 'the base model'}: add --task sequence-classification "
                                  "or --task token-classification, or drop --num-labels.")
        raw["num_labels"] = num_labels
        raw.pop("id2label", None)
        raw.pop("label2id", None)
    same = raw.get("architectures") == src.config.get("architectures")  # a published count is of the published head
    return ConfigSource(name=src.name, kind=src.kind, location=src.location, config=raw, hub_id=src.hub_id,
                        published_params=src.published_params if same else None,
                        published_source=src.published_source if same else None)


def spec_from_config(config: dict[str, Any], name: str = "custom") -> ModelSpec:
    """ModelSpec from a config dict already in hand (tests, tiny models)."""
    return spec_from_source(ConfigSource(name=name, kind="local", location=f"<{name}>", config=config))
