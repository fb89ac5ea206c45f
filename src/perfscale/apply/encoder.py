"""`perfscale.apply.encoder(result)`: the tuned encoder, ready to `encode(list[str])`.

Exported ONNX and quantized files are reused from the cache the tuner filled (keyed by model,
opset, settings and library versions: perfscale.runtimes.onnx_export), or made once if missing.
"""

from __future__ import annotations

import os
from typing import Any

from perfscale.errors import InvalidConfigError


def encoder(result: Any, *, model: str | None = None, cache_dir: str | os.PathLike | None = None, **overrides: Any):
    """An Encoder for the winner of `perfscale tune encoder`.

    `result`: the EncoderTuneResult, the dict parsed from `perfscale tune encoder --json`, or the path
    of a result saved with `--save`. `model` overrides where the model is loaded from (e.g. the same
    model in another folder); `overrides` change single settings (e.g. threads=4).
    """
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.tune.infer_result import load_result
    from perfscale.tune.infer_screen import calibration_sentences

    tuned = load_result(result)
    settings = dict(tuned.winner_settings)
    settings.update(overrides)
    try:
        es = EncoderSettings.from_dict(settings)
    except TypeError as exc:
        raise InvalidConfigError(f"The tune result holds settings this perfscale does not know: {exc}. Re-run the tuner.") from exc
    where = model or (tuned.model if tuned.model == "minilm" else tuned.model_path)
    # A static int8 winner (openvino int8-static) is recalibrated on the tuner's sentences when its model is not cached.
    calibration = calibration_sentences() if es.quantization == "int8-static" else None
    return load_encoder(where, es, cache_dir=cache_dir, calibration=calibration)
