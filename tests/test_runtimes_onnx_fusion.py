"""The fused ONNX graph (runtimes/ort_fusion.py): what fuses, that outputs stay torch's, the fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_runtimes_encoder import SENTENCES, make_tiny_encoder

from perfscale.runtimes import ort_fusion
from perfscale.runtimes.encoder import EncoderSettings, load_encoder
from perfscale.runtimes.source import load_tokenizer, load_torch_model, resolve_encoder

FUSED = EncoderSettings(backend="onnxruntime", fusions=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-fusion-encoder"), seed=3)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """A cache folder holding the tiny model's plain export (exported once for the module)."""
    cache = tmp_path_factory.mktemp("tiny-fusion-cache")
    load_encoder(str(tiny), EncoderSettings(backend="onnxruntime"), cache_dir=cache)
    return cache


@pytest.fixture
def cache(exported, tmp_path):
    """A fresh cache folder with the plain export only: each test makes its own fused files."""
    target = tmp_path / "cache"
    shutil.copytree(exported, target, ignore=shutil.ignore_patterns("fused*"))
    return target


def hidden_states(source, onnx_path, sentences, batch_size=64):
    """(torch eager last_hidden_state, ONNX Runtime's, attention mask) per batch of length-sorted sentences."""
    import onnxruntime as ort
    import torch

    tokenizer = load_tokenizer(source)
    model = load_torch_model(source)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    ordered = sorted(sentences, key=len)
    for start in range(0, len(ordered), batch_size):
        batch = tokenizer(ordered[start:start + batch_size], padding=True, truncation=True,
                          max_length=source.max_length, return_tensors="np")
        feed = {n: batch[n].astype(np.int64) if n in batch else np.zeros_like(batch["input_ids"]) for n in names}
        with torch.inference_mode():
            ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
        yield ref, session.run(None, feed)[0], feed["attention_mask"].astype(bool)


def mean_pool(hidden, mask):
    m = mask[..., None].astype(np.float64)
    emb = (hidden * m).sum(1) / m.sum(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_fused_op_counts_reads_the_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("BiasGelu", ["a", "a"], ["b"], domain="com.microsoft"),
             helper.make_node("BiasGelu", ["b", "b"], ["c"], domain="com.microsoft"),
             helper.make_node("DynamicQuantizeMatMul", ["c", "c"], ["y"], domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, tmp_path / "g.onnx")
    counts = ort_fusion.fused_op_counts(tmp_path / "g.onnx")
    assert counts["BiasGelu"] == 2 and counts["DynamicQuantizeMatMul"] == 1
    assert counts["Attention"] == 0 and "Relu" not in counts
    assert set(ort_fusion.FUSED_OPS) <= set(counts)


def test_tiny_bert_fuses_fully_and_matches_torch(tiny, cache):
    source = resolve_encoder(str(tiny))
    enc = load_encoder(source, FUSED, cache_dir=cache)
    counts = ort_fusion.fused_op_counts(enc.onnx_path)
    # 2 layers: one Attention each, two SkipLayerNorms each, one BiasGelu each; the embeddings fused.
    assert counts["Attention"] == 2 and counts["SkipLayerNormalization"] == 4 and counts["BiasGelu"] == 2
    assert counts["EmbedLayerNormalization"] == 1 and counts["MultiHeadAttention"] == 0
    record = ort_fusion.fusion_record(enc.onnx_path)
    assert record["path"] == "onnxscript+ort-optimizer" and record["note"] is None and record["fused_ops"] == counts
    assert record["max_abs_diff"] <= ort_fusion.FUSED_MAX_ABS_DIFF
    for ref, got, mask in hidden_states(source, enc.onnx_path, SENTENCES * 3, batch_size=5):
        assert np.abs(ref - got)[mask].max() < 1e-4
        assert np.abs(mean_pool(ref, mask) - mean_pool(got, mask)).max() < 1e-4
    eager = load_encoder(source).encode(SENTENCES)
    assert np.abs(enc.encode(SENTENCES) - eager).max() < 1e-4


def test_int8_quantizes_every_projection_of_the_unpacked_graph(tiny, cache):
    import onnx

    enc = load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", fusions=True, quantization="int8-per-channel"),
                       cache_dir=cache)
    assert enc.onnx_path.endswith("fused-mha-int8-per-channel.onnx")
    counts = ort_fusion.fused_op_counts(enc.onnx_path)
    assert counts["MultiHeadAttention"] == 2 and counts["Attention"] == 0
    ops = [n.op_type for n in onnx.load(enc.onnx_path).graph.node]
    # Q, K, V, output projection and the two FFN matrices of each of the 2 layers: all int8.
    assert ops.count("MatMulInteger") == 12 and ops.count("MatMul") == 0
    ref = load_encoder(str(tiny)).encode(SENTENCES)
    cos = (enc.encode(SENTENCES) * ref).sum(1)
    assert cos.min() > 0.97
    assert ort_fusion.fusion_record(enc.onnx_path)["form"] == "unpacked-qkv"  # the record of the graph it came from


def test_tune_encoder_variants_carry_their_fused_ops(tiny, cache):
    from perfscale.tune.infer_result import Variant
    from perfscale.tune.infer_screen import _try_variant

    variant = Variant(label="onnxruntime+fusions", settings=FUSED.to_dict(), stage="runtime")
    _try_variant(variant, resolve_encoder(str(tiny)), SENTENCES, None, None, SENTENCES[:2], 1, cache)
    assert variant.status == "ok", variant.reason
    assert variant.fused_ops["Attention"] == 2 and variant.fused_ops["EmbedLayerNormalization"] == 1
    assert variant.fusion_note is None and "fused_ops" in variant.to_dict()
    eager = Variant(label="eager", settings=EncoderSettings().to_dict(), stage="runtime")
    _try_variant(eager, resolve_encoder(str(tiny)), SENTENCES, None, None, SENTENCES[:2], 1, cache)
    assert eager.fused_ops is None


def test_a_model_the_rewrite_cannot_handle_falls_back_with_a_note(tiny, cache, monkeypatch):
    def cannot(model, pack_qkv=True):
        raise NotImplementedError("an attention this rewrite does not know")

    monkeypatch.setattr(ort_fusion, "onnxscript_fusions", cannot)
    enc = load_encoder(str(tiny), FUSED, cache_dir=cache)
    record = ort_fusion.fusion_record(enc.onnx_path)
    assert record["path"] == "ort-optimizer" and "cannot handle" in record["note"] and "NotImplementedError" in record["note"]
    assert record["fused_ops"]["Attention"] == 0 and record["fused_ops"]["SkipLayerNormalization"] == 4
    eager = load_encoder(str(tiny)).encode(SENTENCES)
    np.testing.assert_allclose(enc.encode(SENTENCES), eager, atol=1e-4)

    # A rewrite that runs but changes the outputs (here: one LayerNorm bias moved by 0.1) is caught
    # by the comparison with the plain export, and the fallback is used instead.
    import onnx
    from onnx import numpy_helper

    def wrong_rewrite(src, dst, source, pack_qkv):
        model = onnx.load(str(src))
        init = next(i for i in model.graph.initializer if i.name.endswith("LayerNorm.bias"))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.1, init.name))
        onnx.save(model, str(dst))

    monkeypatch.setattr(ort_fusion, "_onnxscript_then_ort", wrong_rewrite)
    for f in Path(enc.onnx_path).parent.glob("fused*"):
        f.unlink()
    enc = load_encoder(str(tiny), FUSED, cache_dir=cache)
    record = json.loads(ort_fusion.sidecar(Path(enc.onnx_path)).read_text())
    assert record["path"] == "ort-optimizer" and "changed the outputs by" in record["note"]
    np.testing.assert_allclose(enc.encode(SENTENCES), eager, atol=1e-4)


@pytest.mark.slow
def test_minilm_fused_graph_matches_torch_on_the_whole_corpus(tmp_path):
    """all-MiniLM-L6-v2, every sentence of the shipped corpus: max |diff| < 1e-4 vs torch eager."""
    from perfscale.measure.corpus import load_sentences

    source = resolve_encoder("minilm")
    enc = load_encoder(source, FUSED, cache_dir=tmp_path)
    counts = ort_fusion.fused_op_counts(enc.onnx_path)
    assert counts["Attention"] == 6 and counts["SkipLayerNormalization"] == 12 and counts["BiasGelu"] == 6
    assert counts["EmbedLayerNormalization"] == 1
    sentences = load_sentences()
    worst_hidden = worst_embedding = 0.0
    seen = 0
    for ref, got, mask in hidden_states(source, enc.onnx_path, sentences):
        worst_hidden = max(worst_hidden, float(np.abs(ref - got)[mask].max()))
        worst_embedding = max(worst_embedding, float(np.abs(mean_pool(ref, mask) - mean_pool(got, mask)).max()))
        seen += len(ref)
    assert seen == len(sentences) > 1000
    assert worst_hidden < 1e-4 and worst_embedding < 1e-4, (worst_hidden, worst_embedding)
