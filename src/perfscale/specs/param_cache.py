"""Regenerate the shipped parameter-count cache: `python -m perfscale.specs.param_cache`.

Counting needs the real model classes (imports take seconds each); the cache keeps
`perfscale models` instant. Entries are keyed by a fingerprint of config + class, so an edited
catalogue file is recounted live instead of served stale; tests re-count every entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from perfscale.specs import catalog
from perfscale.specs.model import make_config_object
from perfscale.specs.param_count import build_meta_model, count_model, fingerprint

CACHE_PATH = Path(__file__).parent / "data" / "param_counts.json"


def count_entry(entry: dict) -> tuple[str, dict[str, int]]:
    config = entry["config"]
    architecture = (config.get("architectures") or [None])[0]
    model = build_meta_model(make_config_object(config, entry["_file"]), architecture)
    return fingerprint(config, architecture or ""), count_model(model).as_dict()


def regenerate() -> dict[str, dict]:
    cache = {}
    for entry in catalog.model_entries():
        key, counts = count_entry(entry)
        cache[key] = counts | {"_name": entry["name"]}
    CACHE_PATH.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache


if __name__ == "__main__":
    result = regenerate()
    print(f"wrote {len(result)} entries to {CACHE_PATH}")
