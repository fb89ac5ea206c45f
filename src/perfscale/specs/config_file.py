"""Finding and reading a model's config.json: catalogue name, local folder/file, or hub id.

Resolution order: catalogue name, then an existing local path, then a hub id (owner/name),
which is looked up in the local Hugging Face cache first and fetched only when online.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscale.errors import ConfigFileError, OfflineError, UnknownNameError, closest
from perfscale.specs import catalog


@dataclass(frozen=True)
class ConfigSource:
    """Where a model's config came from, and the config itself (the config.json as a dict)."""

    name: str  # what the user typed, or the catalogue name
    kind: str  # "catalog" | "local" | "hub"
    location: str  # catalogue file, local path, or hub id
    config: dict[str, Any]
    hub_id: str | None = None
    published_params: int | None = None
    published_source: str | None = None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a config.json, naming the file in every error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"Cannot read model config {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"Model config {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). Fix the file or pass a catalogue name (see `perfscale models`)."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"Model config {path} must hold a JSON object, not {type(data).__name__}.")
    return data


def _local_config_path(value: str) -> Path | None:
    path = Path(value).expanduser()
    try:
        return _existing_config(path)
    except OSError as exc:  # ENAMETOOLONG, ELOOP, ...: not a path this system can open
        raise ConfigFileError(
            f"Model {_shown(value)!r} is not a usable path ({exc.strerror}) and not a catalogue name. "
            "Pass a catalogue name (`perfscale models`), a model folder or config.json, or a hub id."
        ) from exc


def _shown(value: str) -> str:
    return value if len(value) <= 120 else value[:117] + "..."


def _existing_config(path: Path) -> Path | None:
    if path.is_dir():
        candidate = path / "config.json"
        if not candidate.is_file():
            raise ConfigFileError(
                f"Folder {path} has no config.json. Pass the folder of a Hugging Face model "
                "(the one holding config.json) or the config.json file itself."
            )
        return candidate
    if path.is_file():
        return path
    return None


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "/", "~"))


def _offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _hub_config_path(hub_id: str) -> Path:
    """config.json of a hub repo: from the local HF cache, else downloaded when online."""
    from huggingface_hub import hf_hub_download  # lazy: only hub ids need it

    try:
        return Path(hf_hub_download(hub_id, "config.json", local_files_only=True))
    except Exception:  # not cached: fall through to a download
        pass
    how_to = (
        f"Download it once where you are online (`hf download {hub_id} config.json`), or pass a "
        "local folder or config.json path with --model, or a catalogue name (`perfscale models`)."
    )
    if _offline_requested():
        raise OfflineError(f"Model {hub_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. {how_to}")
    try:
        return Path(hf_hub_download(hub_id, "config.json"))
    except Exception as exc:
        kind = type(exc).__name__
        if "NotFound" in kind or "Gated" in kind or "Unauthorized" in kind:
            raise UnknownNameError(
                f"Hub model {hub_id!r} cannot be fetched ({kind}): check the id, or for a gated "
                f"model log in with `hf auth login`. {how_to}"
            ) from exc
        raise OfflineError(f"Cannot fetch {hub_id!r} from the Hugging Face Hub ({kind}: {exc}). {how_to}") from exc


def resolve_config(value: str) -> ConfigSource:
    """Turn what the user typed into a config dict, or raise an error that says what to do."""
    if not value.strip():
        raise UnknownNameError("The model name is empty: pass a catalogue name (list them with `perfscale models`), "
                               "a model folder or config.json, or a hub id (owner/name).")
    entry = catalog.find_model(value)
    if entry is not None:
        return ConfigSource(
            name=entry["name"],
            kind="catalog",
            location=entry["_file"],
            config=entry["config"],
            hub_id=entry.get("hub_id"),
            published_params=entry.get("published_params"),
            published_source=entry.get("published_source"),
        )
    path = _local_config_path(value)
    if path is not None:
        return ConfigSource(name=value, kind="local", location=str(path), config=read_config_file(path))
    if _looks_like_hub_id(value):
        path = _hub_config_path(value)
        return ConfigSource(
            name=value, kind="hub", location=str(path), config=read_config_file(path), hub_id=value
        )
    suggestions = closest(value, catalog.model_names())
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise UnknownNameError(
        f"Unknown model {_shown(value)!r}: not a catalogue name, not an existing path, not a hub id "
        f"(owner/name).{hint} List the catalogue with `perfscale models`."
    )
