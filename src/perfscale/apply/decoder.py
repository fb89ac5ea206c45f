"""`perfscale.apply.decoder(result)`: from_pretrained / generate kwargs and runtime settings of a tuned decoder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError


def decoder(result: Any) -> dict[str, Any]:
    """{'from_pretrained': {...}, 'generate': {...}, 'runtime': {compile, batch, buckets, ...}, 'settings': {...}}.

    `result`: a DecoderTuneResult, its to_dict() document (`perfscale tune decoder --json`), or a saved file.
    Use `runtime['buckets']` to left-pad prompts (perfscale.runtimes.decoder.bucket_length), and wrap the
    forward with torch.compile(model.forward, dynamic=False) when `runtime['compile']` is true.
    """
    from perfscale.runtimes.decoder import DecoderSettings

    if isinstance(result, (str, os.PathLike)):
        try:
            result = json.loads(Path(result).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidConfigError(f"Cannot read a decoder tune result from {result}: {exc}.") from exc
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(data, dict) or data.get("kind") != "decoder" or "winner_settings" not in data:
        raise InvalidConfigError("Not a decoder tune result: pass what tune_decoder() returned, its --json dict, or its saved file.")
    settings = DecoderSettings.from_dict(data["winner_settings"])
    return {
        "from_pretrained": settings.from_pretrained_kwargs(),
        "generate": settings.generate_kwargs(),
        "runtime": {"compile": settings.compile, "compile_kwargs": {"dynamic": False} if settings.compile else None,
                    "batch": settings.batch, "buckets": list(settings.buckets) if settings.buckets else None,
                    "padding_side": "left"},
        "settings": settings.to_dict(),
    }
