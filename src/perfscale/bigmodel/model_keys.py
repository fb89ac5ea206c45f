"""What a model class expects to find in a checkpoint, from the real class on the meta device.

transformers 5 loads checkpoints in two key layouts: its own (the module tree: e.g. Mixtral's fused
`mlp.experts.gate_up_proj`) and the original one that save_pretrained writes back
(`save_original_format=True`: `block_sparse_moe.experts.0.w1.weight`). Both are derived with
transformers' own functions (`remove_tied_weights_from_state_dict`, `revert_weight_conversion`),
so a conversion added to transformers is followed without a table of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpectedKeys:
    transformers_keys: frozenset[str]  # state dict keys with tied duplicates removed
    original_keys: frozenset[str]  # the same, in the layout save_pretrained writes
    tie_groups: tuple[tuple[str, ...], ...]  # names of one shared parameter (after tie_weights)
    buffer_numel: int  # elements of persistent buffers (saved with the weights, not parameters)
    ignore_unexpected: tuple[str, ...]  # the class's _keys_to_ignore_on_load_unexpected patterns
    no_split_modules: tuple[str, ...]
    non_persistent: frozenset[str] = frozenset()  # buffers the class does not save (older checkpoints did)


def expected_keys(spec) -> ExpectedKeys:
    from perfscale.specs.param_count import build_meta_model

    model = build_meta_model(spec.config_object(), spec.architecture)
    return keys_of(model)


def keys_of(model) -> ExpectedKeys:
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    state = model.state_dict()
    param_names = {n for names in groups.values() for n in names}
    buffers = sum(t.numel() for n, t in state.items() if n not in param_names)
    try:
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        untied = remove_tied_weights_from_state_dict(dict(state), model)
    except Exception:  # an older/newer transformers without it: drop all but the first name of each group
        dropped = {n for names in groups.values() for n in names[1:]}
        untied = {n: t for n, t in state.items() if n not in dropped}
    try:
        from transformers.core_model_loading import revert_weight_conversion

        original = revert_weight_conversion(model, dict(untied))
    except Exception:
        original = untied
    ignore = tuple(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
    non_persistent = frozenset(n for n, _ in model.named_buffers() if n not in state)
    return ExpectedKeys(frozenset(untied), frozenset(original), tuple(tuple(g) for g in groups.values() if len(g) > 1),
                        buffers, ignore, tuple(sorted(getattr(model, "_no_split_modules", None) or ())), non_persistent)


def compare_keys(expected: ExpectedKeys, present: set[str]) -> dict:
    """Which layout the checkpoint uses, and what is missing or unexpected for the model class."""
    tf_hits = len(present & expected.transformers_keys)
    orig_hits = len(present & expected.original_keys)
    layout = "original" if orig_hits > tf_hits else "transformers"
    wanted = expected.original_keys if layout == "original" else expected.transformers_keys
    tied_names = {n for g in expected.tie_groups for n in g}
    satisfied = {n for g in expected.tie_groups if present & set(g) for n in g}
    missing = sorted(n for n in wanted - present if n not in satisfied)
    unexpected = sorted(present - wanted - tied_names)
    # from_pretrained drops these silently: the class's ignore patterns, and buffers it no longer saves
    # (e.g. BERT's embeddings.position_ids, persistent in older transformers)
    ignored = [n for n in unexpected if n in expected.non_persistent
               or any(re.search(p, n) for p in expected.ignore_unexpected)]
    tied = [{"names": list(g), "stored": [n for n in g if n in present]} for g in expected.tie_groups]
    return {"layout": layout, "missing": missing, "unexpected": [n for n in unexpected if n not in ignored],
            "ignored_unexpected": ignored, "tied": tied}
