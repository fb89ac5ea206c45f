"""Regenerate the shipped parameter-count cache: `python -m perfscale.specs.param_cache`.

Counting needs the real model classes (imports take seconds each); the cache keeps
`perfscale models` and `perfscale plan` on a catalogue model instant (no transformers or torch import):
it holds each entry's counts and the ModelSpec fields read off its config class. Entries are keyed by a fingerprint of config + class, so an edited
catalogue file is recounted live instead of served stale; tests re-count every entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from perfscale.specs import catalog
from perfscale.specs.model import architecture_fields, make_config_object
from perfscale.specs.param_count import build_meta_model, count_model, fingerprint

CACHE_PATH = Path(__file__).parent / "data" / "param_counts.json"


def count_entry(entry: dict) -> tuple[str, dict[str, int]]:
    key, counts, _ = describe_entry(entry)
    return key, counts


def describe_entry(entry: dict) -> tuple[str, dict[str, int], dict]:
    """(cache key, exact parameter counts, ModelSpec architecture fields) of a catalogue entry."""
    config = entry["config"]
    architecture = (config.get("architectures") or [None])[0]
    cfg = make_config_object(config, entry["_file"])
    model = build_meta_model(cfg, architecture)
    return fingerprint(config, architecture or ""), count_model(model).as_dict(), architecture_fields(cfg, architecture)


def regenerate() -> dict[str, dict]:
    cache = {}
    for entry in catalog.model_entries():
        key, counts, spec = describe_entry(entry)
        cache[key] = counts | {"_name": entry["name"], "_spec": spec}
    CACHE_PATH.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache


if __name__ == "__main__":
    result = regenerate()
    print(f"wrote {len(result)} entries to {CACHE_PATH}")
