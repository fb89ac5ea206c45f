"""A graph ONNX Runtime fuses fully: onnxscript's ORT fusions, then ORT's transformer optimizer.

ORT's own BERT optimizer (onnxruntime.transformers.optimizer, model_type "bert") fuses
SkipLayerNormalization and BiasGelu in torch's dynamo export, but no attention: the dynamo graph's
attention is not the MatMul-Softmax-MatMul pattern of the TorchScript exporter that the optimizer
matches (0 Attention nodes for all-MiniLM-L6-v2, benchmarks/LOG.md 2026-11-27). onnxscript ships
rewrite rules made for the dynamo graph (`onnxscript.rewriter.ort_fusions`): they find the scaled
dot-product attention, turn it into ORT's MultiHeadAttention and, with the Q, K and V projections
packed into one weight, into ORT's Attention. Then ORT's optimizer fuses what is left (the
embeddings into EmbedLayerNormalization, once its position-id pattern is in the form it matches).

Two forms:
- packed (fp32): Attention with one [h, 3h] QKV GEMM per layer instead of three [h, h] ones.
- unpacked (for int8): MultiHeadAttention after three separate MatMuls, because ORT's dynamic
  quantizer quantizes MatMuls but not this Attention (its QAttention has no attention-bias input
  and skips nodes with `qkv_hidden_sizes`): packed, the QKV GEMMs would stay fp32.

Every fused graph is checked against the plain export on a padded example batch before it is used;
a model the rewrite cannot handle, or whose fused graph differs by more than FUSED_MAX_ABS_DIFF,
gets ORT's optimizer alone on the plain export (the path before this module), with a note.
Each fused file has a sidecar `<name>.fusions.json`: fused-op counts, the path taken, the note.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

# The fused graph must reproduce the plain export within this (max |diff| of last_hidden_state on
# the non-padded positions of the check batch; fp32 re-association moves MiniLM's by ~6e-6 here).
FUSED_MAX_ABS_DIFF = 1e-4
# The fused-operator kinds a report names, always (0 when absent); any other com.microsoft op found is added.
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
             "SkipSimplifiedLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu")
_MS_DOMAIN = "com.microsoft"


def fused_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many of each fused operator the ONNX file holds, read from the file itself.

    Keys: every name in FUSED_OPS (0 when absent), plus any other com.microsoft operator present
    (e.g. DynamicQuantizeMatMul in an int8 graph).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in FUSED_OPS or n.domain == _MS_DOMAIN)
    return {name: int(counts.get(name, 0)) for name in FUSED_OPS} | {k: int(v) for k, v in sorted(counts.items()) if k not in FUSED_OPS}


def fusion_record(path: str | os.PathLike) -> dict | None:
    """The sidecar of a fused file (fused_ops, path, note, max_abs_diff), or None when there is none.

    For a quantized file (`fused-mha-int8-per-channel.onnx`) it is the sidecar of the fused graph it
    was made from (`fused-mha.fusions.json`).
    """
    path = Path(path)
    candidates = [sidecar(path)] + [path.with_name(f"{stage}.fusions.json") for stage in ("fused-mha", "fused")
                                    if path.stem.startswith(stage + "-")]
    f = next((c for c in candidates if c.is_file()), None)
    return json.loads(f.read_text()) if f is not None else None


def sidecar(path: Path) -> Path:
    return path.with_suffix(".fusions.json")


def fuse(src: Path, dst: Path, source, *, pack_qkv: bool = True) -> dict:
    """Write the fused graph of the plain export `src` to `dst` and return its record (also in the sidecar).

    Tries onnxscript's fusions + ORT's optimizer; falls back to ORT's optimizer alone (never an
    error for a model the rewrite cannot handle). Raises only when ORT's optimizer itself fails.
    """
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    record: dict = {}
    try:
        note = None
        try:
            with contextlib.redirect_stdout(sys.stderr):
                _onnxscript_then_ort(src, tmp, source, pack_qkv)
            diff = max_abs_diff(src, tmp)
            if not diff <= FUSED_MAX_ABS_DIFF:  # also catches NaN
                note = (f"onnxscript's attention fusion changed the outputs by {diff:.3g} (> {FUSED_MAX_ABS_DIFF:g}) "
                        "on the check batch: used ORT's transformer optimizer alone (no fused attention).")
        except Exception as exc:  # the rewrite's failures are many; each means "this model: the old path"
            note = (f"onnxscript's ORT fusions cannot handle {source.name!r} ({source.model_type}): "
                    f"{type(exc).__name__}: {str(exc)[:200]}; used ORT's transformer optimizer alone (no fused attention).")
        if note is None:
            record = {"path": "onnxscript+ort-optimizer", "form": "packed-qkv" if pack_qkv else "unpacked-qkv",
                      "max_abs_diff": diff, "note": None}
        else:
            with contextlib.redirect_stdout(sys.stderr):
                ort_optimizer(src, tmp, source)
            record = {"path": "ort-optimizer", "form": None, "max_abs_diff": max_abs_diff(src, tmp), "note": note}
        record["fused_ops"] = fused_op_counts(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar(dst).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _onnxscript_then_ort(src: Path, dst: Path, source, pack_qkv: bool) -> None:
    import onnx_ir as ir

    model = ir.load(str(src))
    counts = onnxscript_fusions(model, pack_qkv=pack_qkv)
    if counts.get("mha", 0) == 0:
        raise ValueError("no attention matched")
    _position_ids_from_input_ids(model)
    ir.save(model, str(dst))
    ort_optimizer(dst, dst, source)


def onnxscript_fusions(model, pack_qkv: bool = True) -> dict[str, int]:
    """onnxscript's ORT fusions for an encoder, in place; returns the count of each fusion applied.

    The sequence of `onnxscript.rewriter.ort_fusions.optimize_for_ort` (onnxscript 0.7.2) restricted
    to what an encoder has (no rotary embeddings, no KV cache, no GQA), with the QKV packing
    (`fuse_attention`) optional; see the module docstring for why.
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES, shape_optimization
    from onnxscript.rewriter.ort_fusions.attention import fuse_attention
    from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
    from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
    from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu
    from onnxscript.rewriter.ort_fusions.mha import fuse_mha2
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_layer_normalization
    from onnxscript.rewriter.rules.common import _gemm_to_matmul_add

    rewrite(model, [_gemm_to_matmul_add.gemm_to_matmul_add_rule])
    common_passes.ShapeInferencePass()(model)
    optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimize(model)
    counts = {"erf_gelu": fuse_erfgelu(model), "skip_layer_normalization": fuse_skip_layer_normalization(model)}
    common_passes.CommonSubexpressionEliminationPass()(model)
    counts["sdpa"] = fuse_sdpa(model, apply_shape_inference=True)
    counts["mha"] = fuse_mha2(model)
    counts["mha_bias"] = fuse_mha_bias(model) if counts["mha"] else 0
    counts["attention"] = fuse_attention(model) if counts["mha"] and pack_qkv else 0
    counts["gelu"] = fuse_gelu(model)
    counts["bias_gelu"] = fuse_bias_gelu(model)
    optimize(model)
    rewrite(model, ORT_PATTERN_REWRITE_RULES)
    ir.passes.Sequential(
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common_passes.RemoveInitializersFromInputsPass(),
        common_passes.ShapeInferencePass(),
    )(model)
    return counts


def _position_ids_from_input_ids(model) -> int:
    """Let ORT's EmbedLayerNormalization fusion see where the position ids come from.

    BERT slices its position-id buffer to the sequence length: `position_ids[:, 0:seq]`. The dynamo
    export takes `seq` from any input of that length (token_type_ids for MiniLM, as
    Shape(start=1, end=2)); ORT's matcher wants Unsqueeze(Gather(Shape(input_ids), 1), 0). Every
    graph input of shape [batch, seq] has the same `seq`, so the Slice's end is rewired to that
    form when its source is such an input. Returns the number of Slices rewired.
    """
    import numpy as np
    import onnx_ir as ir

    graph = model.graph
    ids = next((v for v in graph.inputs if v.name == "input_ids"), None)
    if ids is None or ids.shape is None or len(ids.shape) != 2:
        return 0
    rewired = 0
    for node in list(graph):
        if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
            continue
        data, ends = node.inputs[0], node.inputs[2]
        shape_node = ends.producer() if ends is not None else None
        if data is None or data.const_value is None or shape_node is None or shape_node.op_type != "Shape":
            continue
        attrs = {k: a.value for k, a in shape_node.attributes.items()}
        other = shape_node.inputs[0]
        if (attrs.get("start"), attrs.get("end")) != (1, 2) or other not in graph.inputs:
            continue
        if other.shape is None or len(other.shape) != 2 or other.shape[1] != ids.shape[1]:
            continue
        one = ir.Value(name=f"_perfscale_one_{rewired}", const_value=ir.tensor(np.array(1, dtype=np.int64)))
        zero = ir.Value(name=f"_perfscale_axes0_{rewired}", const_value=ir.tensor(np.array([0], dtype=np.int64)))
        graph.register_initializer(one)
        graph.register_initializer(zero)
        shape = ir.node("Shape", [ids])
        seq = ir.node("Gather", [shape.outputs[0], one], attributes={"axis": 0})
        end = ir.node("Unsqueeze", [seq.outputs[0], zero])
        graph.insert_before(node, [shape, seq, end])
        node.replace_input_with(2, end.outputs[0])
        rewired += 1
    return rewired


def ort_optimizer(src: Path, dst: Path, source) -> None:
    """ORT's transformer optimizer (model_type bert) alone on src, written to dst as one file: the fallback,
    and perfscale's fused graph before this module (no attention fused in a dynamo export)."""
    from onnxruntime.transformers.optimizer import optimize_model

    # Every encoder family is optimized as "bert": onnxruntime's other model types are decoders, vision or speech.
    opt = optimize_model(str(src), model_type="bert", num_heads=source.num_heads or 0,
                         hidden_size=source.hidden_size or 0, opt_level=1)
    opt.save_model_to_file(str(dst), use_external_data_format=False)


def check_batch(input_names: list[str]) -> dict:
    """A small padded batch for the graph's inputs: row 2 is padded, so the mask path is exercised."""
    import numpy as np

    # Token ids below 10: valid for any vocabulary a test's tiny config has.
    ids = np.array([[2, 7, 3, 4, 9, 1, 5], [2, 6, 5, 3, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: values.get(n, np.zeros_like(ids)) for n in input_names}


def max_abs_diff(a: Path, b: Path) -> float:
    """Max |diff| of the first output of two graphs on check_batch, over non-padded positions."""
    import numpy as np
    import onnxruntime as ort

    outs = []
    for path in (a, b):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = check_batch([i.name for i in session.get_inputs()])
        outs.append(session.run(None, feed)[0])
    valid = feed["attention_mask"].astype(bool) if "attention_mask" in feed else np.ones(outs[0].shape[:2], bool)
    diff = np.abs(outs[0].astype(np.float64) - outs[1].astype(np.float64))[valid]
    return float(diff.max()) if not np.isnan(diff).any() else float("nan")
