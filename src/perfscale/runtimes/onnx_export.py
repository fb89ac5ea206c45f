"""torch -> ONNX export of an encoder, cached by model, opset and settings, and reused.

Cache layout: <cache>/onnx/<model-slug>-<key>/ with model.onnx (plain export), fused.onnx
(fused attention with packed QKV, runtimes/ort_fusion.py), fused-mha.onnx (the same with Q, K, V
apart, what int8 quantizes), each with a .fusions.json, and <stage>-<quantization>.onnx. The key hashes the model
folder, its weight files' size and mtime, the opset and the torch / onnxruntime versions, so a
changed model or library gets a fresh export. Files are written to a temporary name and renamed,
so a concurrent or interrupted run never sees half a file.

Export uses the dynamo exporter (the TorchScript exporter produced wrong outputs for MiniLM on
torch 2.13: max |diff| 2.2 on last_hidden_state, measured here). The dynamo exporter binds
`input_names` by *position* (../shared/FIELD-NOTES.md), so we export a wrapper whose positional
arguments are exactly the tokenizer's input names in a fixed order, and we write weights inside
the .onnx file (external_data=False) so one file is one model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from perfscale.errors import UnsupportedModelError
from perfscale.runtimes.source import load_torch_model
from perfscale.user_cache import user_cache_dir

_EXPORT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """$XDG_CACHE_HOME/perfscale, else ~/.cache/perfscale, unless a folder is given."""
    return Path(cache_dir) if cache_dir is not None else user_cache_dir()


def model_cache_dir(source, opset: int, cache_dir=None) -> Path:
    import onnxruntime
    import torch

    key = json.dumps(
        {"path": source.path, "weights": source.weights_fingerprint(), "opset": opset, "torch": torch.__version__,
         "onnxruntime": onnxruntime.__version__, "format": 3},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source.path).name if source.name != "minilm" else "minilm")[:40]
    return cache_root(cache_dir) / "onnx" / f"{slug}-{digest}"


def export_onnx(source, input_names: list[str], opset: int, cache_dir=None) -> Path:
    """The plain fp32 ONNX graph of the encoder (token embeddings out), exported once and cached."""
    folder = model_cache_dir(source, opset, cache_dir)
    target = folder / "model.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if "input_ids" not in input_names:
        raise UnsupportedModelError(f"Tokenizer of {source.name!r} gives no input_ids (inputs: {input_names}); cannot export it.")
    # The encoder always feeds an attention mask (it pads batches); token_type_ids only if the tokenizer makes them.
    names = [n for n in _EXPORT_ORDER if n in input_names or n == "attention_mask"]
    tmp = folder / f"model.onnx.tmp{os.getpid()}"
    try:
        _export(source, names, opset, tmp)
        os.replace(tmp, target)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # exporter failures are many and varied: report them as the model's limit
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [""])[0]
        raise UnsupportedModelError(
            f"The ONNX exporter cannot handle {source.name!r} ({source.model_type}): {type(root).__name__}: {first[:300]}. "
            "Use the torch backends (eager or compile) for this model: tune without onnxruntime (--backends eager,compile)."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    (folder / "meta.json").write_text(json.dumps({"model": source.to_dict(), "opset": opset, "inputs": names}, indent=2))
    return target


def _export(source, names: list[str], opset: int, path: Path) -> None:
    import torch

    # Eager attention exports as MatMul-Softmax-MatMul, the pattern ORT's attention fusion knows;
    # the SDPA path does not fuse (0 Attention nodes fused, measured here).
    try:
        model = load_torch_model(source, attn="eager")
    except UnsupportedModelError:
        model = load_torch_model(source)

    class Positional(torch.nn.Module):
        """Positional arguments in `names` order: the exporter binds input names by position."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.long)
    ids = ids.clamp(max=model.config.vocab_size - 1)
    example = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    args = tuple(example[n] for n in names)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=1, max=8192)
    # The exporter prints progress on stdout; keep stdout clean for --json.
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        torch.onnx.export(
            Positional(model), args, str(path), input_names=names, output_names=["last_hidden_state"],
            opset_version=opset, dynamo=True, external_data=False,
            dynamic_shapes=tuple({0: batch, 1: seq} for _ in names),
        )


def onnx_model_for(source, settings, input_names: list[str], cache_dir=None) -> Path:
    """The ONNX file for these settings: export, then fusions, then int8 quantization, each cached."""
    from perfscale.runtimes import quantize

    path = export_onnx(source, input_names, settings.opset, cache_dir)
    stage = "model"
    if settings.fusions:
        # int8: Q, K, V stay MatMuls so that the quantizer reaches them (ort_fusion's docstring).
        stage = "fused" if settings.quantization == "none" else "fused-mha"
        path = quantize.fuse(path, path.with_name(f"{stage}.onnx"), source, pack_qkv=settings.quantization == "none")
    if settings.quantization != "none":
        path = quantize.quantize_int8(path, path.with_name(f"{stage}-{settings.quantization}.onnx"), settings.quantization)
    return path
