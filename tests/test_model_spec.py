"""ModelSpec: architecture fields and exact parameter counts for every covered family."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_configs import FAMILIES, tiny_config

from perfscale.errors import ConfigFileError, OfflineError, UnknownNameError, UnsupportedModelError
from perfscale.specs import load_model_spec, spec_from_config
from perfscale.specs.param_count import COMPONENTS, model_class


@pytest.mark.parametrize("family", FAMILIES)
def test_meta_count_equals_real_model(family):
    spec = spec_from_config(tiny_config(family), family)
    config = spec.config_object()
    torch.manual_seed(0)
    real = model_class(config, spec.architecture)._from_config(config)  # real weights, tied as from_pretrained
    assert spec.params.total == sum(p.numel() for p in real.parameters())
    assert sum(getattr(spec.params, c) for c in COMPONENTS) == spec.params.total
    assert spec.params.attention > 0 and spec.params.mlp > 0 and spec.params.embeddings > 0


def test_tied_embeddings_counted_once():
    tied = spec_from_config(tiny_config("qwen2", tie_word_embeddings=True))
    untied = spec_from_config(tiny_config("qwen2", tie_word_embeddings=False))
    assert tied.tied_embeddings and not untied.tied_embeddings
    vocab_by_hidden = 320 * 64
    assert untied.params.total - tied.params.total == vocab_by_hidden
    assert tied.params.lm_head == 0 and untied.params.lm_head == vocab_by_hidden


def test_family_specific_fields():
    llama = spec_from_config(tiny_config("llama"))
    assert (llama.num_heads, llama.num_kv_heads, llama.head_dim) == (4, 2, 16)
    mixtral = spec_from_config(tiny_config("mixtral"))
    assert (mixtral.num_experts, mixtral.experts_per_token, mixtral.is_moe) == (4, 2, True)
    gpt2 = spec_from_config(tiny_config("gpt2"))
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.intermediate_size, gpt2.max_positions) == (64, 2, 256, 128)
    t5 = spec_from_config(tiny_config("t5", num_decoder_layers=3))
    assert t5.is_encoder_decoder and (t5.num_encoder_layers, t5.num_decoder_layers, t5.num_layers) == (2, 3, 3)
    assert t5.intermediate_size == 128 and t5.head_dim == 16
    falcon = spec_from_config(tiny_config("falcon"))
    assert falcon.num_kv_heads == 2
    mqa = spec_from_config(tiny_config("falcon", new_decoder_architecture=False, multi_query=True, parallel_attn=True))
    assert mqa.num_kv_heads == 1
    opt = spec_from_config(tiny_config("opt"))
    assert opt.intermediate_size == 256


def test_catalogue_model_large_counts_without_memory():
    spec = load_model_spec("llama-3.1-405b")  # meta device: no weights allocated
    assert spec.params.total > 400e9 and spec.num_kv_heads == 8 and spec.num_layers == 126


def test_local_folder_and_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config("llama")))
    by_dir = load_model_spec(str(tmp_path))
    by_file = load_model_spec(str(tmp_path / "config.json"))
    assert by_dir.source == "local" and by_dir.params == by_file.params


def test_hub_id_from_local_cache(tmp_path, monkeypatch):
    # The layout huggingface_hub uses for its cache: models--owner--name/{refs/main, snapshots/REV/}.
    repo = tmp_path / "models--acme--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text(json.dumps(tiny_config("gpt2")))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    spec = load_model_spec("acme/tiny")
    assert spec.source == "hub" and spec.hub_id == "acme/tiny" and spec.model_type == "gpt2"


def test_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"acme/absent.*local folder or config.json"):
        load_model_spec("acme/absent")


def test_hub_download_is_used_when_online(tmp_path, monkeypatch):
    """Not cached + online: one hf_hub_download of config.json (mocked: tests never touch a network)."""
    import huggingface_hub

    target = tmp_path / "config.json"
    target.write_text(json.dumps(tiny_config("opt")))
    calls = []

    def fake_download(repo_id, filename, local_files_only=False, **_):
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return str(target)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec = load_model_spec("acme/online")
    assert spec.model_type == "opt"
    assert calls == [("acme/online", "config.json", True), ("acme/online", "config.json", False)]


def test_malformed_config_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigFileError, match=r"config.json is not valid JSON \(line 1"):
        load_model_spec(str(bad))


def test_incomplete_config_names_the_missing_field(tmp_path):
    config = tiny_config("gpt2")
    del config["n_layer"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigFileError, match=r"missing num_hidden_layers \(or n_layer\)"):
        load_model_spec(str(path))
    del config["model_type"]
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigFileError, match="no 'model_type'"):
        load_model_spec(str(path))


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="'no-such-arch' is unknown"):
        spec_from_config({"model_type": "no-such-arch", "hidden_size": 8})


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownNameError, match=r"Did you mean: .*llama-3.1-8b"):
        load_model_spec("lama-3.1-8b")
