"""Listing the model catalogue (optionally one family) as ModelSpecs."""

from __future__ import annotations

from perfscale.errors import UnknownNameError, closest
from perfscale.specs import catalog
from perfscale.specs.config_file import resolve_config
from perfscale.specs.model import ModelSpec, spec_from_source


def families() -> list[str]:
    return sorted({e["family"] for e in catalog.model_entries()})


def list_models(family: str | None = None) -> list[ModelSpec]:
    entries = catalog.model_entries()
    if family:
        known = families()
        if family.lower() not in known:
            suggestions = closest(family, known)
            hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
            raise UnknownNameError(f"Unknown family {family!r}.{hint} Families in the catalogue: {', '.join(known)}.")
        entries = [e for e in entries if e["family"] == family.lower()]
    return [spec_from_source(resolve_config(e["name"])) for e in entries]
