"""`perfscale checkpoint convert`: .bin -> sharded safetensors in transformers' index format, streaming,
tied weights once, bit-identical round trip and from_pretrained outputs; refusals leave nothing behind."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from cli_contract import run_in_process
from tiny_configs import tiny_config

from perfscale.bigmodel.convert import convert_checkpoint
from perfscale.bigmodel.errors import CheckpointError, UnsafePickleError
from perfscale.bigmodel.sizes import parse_size
from perfscale.errors import InvalidConfigError


@pytest.fixture(scope="module")
def qwen_bin(tmp_path_factory):
    """A tiny Qwen2 (tied embeddings) saved the old way: torch.save(state_dict) as pytorch_model.bin."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = tiny_config("qwen2")
    model_type = config.pop("model_type")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
    root = tmp_path_factory.mktemp("qbin") / "qwen2-bin"
    root.mkdir()
    model.config.save_pretrained(root)
    state = model.state_dict()
    torch.save(state, root / "pytorch_model.bin")
    return root, {k: v.clone() for k, v in state.items()}


def _read_all(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            assert h.metadata() == {"format": "pt"}
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def test_bin_to_sharded_safetensors_round_trip(qwen_bin, tmp_path):
    src, state = qwen_bin
    result = convert_checkpoint(str(src), str(tmp_path / "out"), max_shard_size="100KB")
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    written = _read_all(out)
    # the index transformers writes: metadata.total_size (bytes) and total_parameters, weight_map name -> shard
    assert index["metadata"] == {"total_parameters": result.total_parameters, "total_size": result.total_size}
    assert result.total_size == sum(t.numel() * t.element_size() for t in written.values())
    assert set(index["weight_map"]) == set(written) and set(index["weight_map"].values()) == {s.file for s in result.shards}
    n = len(result.shards)
    assert n > 1 and sorted(p.name for p in out.glob("*.safetensors")) == [f"model-{i:05d}-of-{n:05d}.safetensors"
                                                                           for i in range(1, n + 1)]
    for s in result.shards:
        assert s.file_bytes == os.path.getsize(out / s.file)
        assert s.tensor_bytes <= 100_000 or s.over_limit
    # tied weights once: lm_head.weight is the embedding, dropped; everything else bit-identical
    assert result.dropped_aliases == [{"dropped": "lm_head.weight", "kept": "model.embed_tokens.weight"}]
    assert set(written) == set(state) - {"lm_head.weight"}
    assert all(torch.equal(written[k], state[k]) for k in written)
    assert result.verify["probe"]["identical"] and result.verify["tensors"]["compared"] == len(written)
    assert (out / "config.json").is_file() and not list(tmp_path.glob(".out.partial-*"))
    # and transformers loads it with the tie restored
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])


def test_dtype_cast_to_bf16(qwen_bin, tmp_path):
    src, state = qwen_bin
    result = convert_checkpoint(str(src), str(tmp_path / "bf16"), dtype="bf16")
    assert result.index_file is None and [s.file for s in result.shards] == ["model.safetensors"]
    written = _read_all(tmp_path / "bf16")
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, state[k].to(torch.bfloat16)) for k, t in written.items())
    assert result.total_size == 2 * result.total_parameters
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert result.verify["probe"]["dtype"] == "bfloat16" and result.verify["probe"]["identical"]


def test_streaming_keeps_rss_near_one_tensor(tmp_path):
    """64 MiB of weights in 16 tensors of 4 MiB, max shard 32 MB: RSS rises by far less than a shard."""
    src = tmp_path / "big"
    src.mkdir()
    torch.save({f"w.{i}": torch.full((1024, 1024), float(i)) for i in range(16)}, src / "pytorch_model.bin")
    result = convert_checkpoint(str(src), str(tmp_path / "big-out"), max_shard_size="32MB", probe=False)
    assert len(result.shards) == 3 and result.largest_tensor_bytes == 4 * 2**20
    assert result.peak_rss_bytes - result.baseline_rss_bytes < 0.5 * result.largest_shard_bytes
    assert result.verify["tensors"] == {"compared": 16, "identical": True}


class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_hostile_pickle_refused_nothing_written(tmp_path):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(tiny_config("llama")))
    torch.save({"w": torch.zeros(2), "x": _WritesAFile(str(marker))}, src / "pytorch_model.bin")
    with pytest.raises(UnsafePickleError, match="weights_only=True"):
        convert_checkpoint(str(src), str(tmp_path / "out"))
    code, out, err, _ = run_in_process(["checkpoint", "convert", str(src), "--to", str(tmp_path / "out"), "--json"], 60)
    assert code == 2 and json.loads(out)["error"]["type"] == "UnsafePickleError"
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil"]


def test_failure_midway_leaves_nothing(qwen_bin, tmp_path, monkeypatch):
    import perfscale.bigmodel.convert as convert

    calls = []
    real = convert.write_streaming

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "write_streaming", failing)
    with pytest.raises(OSError):
        convert_checkpoint(str(qwen_bin[0]), str(tmp_path / "out"), max_shard_size="100KB", probe=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,value", [("5GB", 5 * 10**9), ("5 GB", 5 * 10**9), ("5GiB", 5 * 2**30), ("500MB", 5 * 10**8),
                                        ("1.5GB", 1_500_000_000), ("1000000", 10**6)])
def test_shard_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["-1", "0", "5 XB", "abc", "", "5GB5", "1e400"])
def test_bad_shard_sizes_exit_2(qwen_bin, tmp_path, text):
    with pytest.raises(InvalidConfigError, match="5GiB"):
        parse_size(text)
    code, out, err, _ = run_in_process(["checkpoint", "convert", str(qwen_bin[0]), "--to", str(tmp_path / "o"),
                                        "--max-shard-size", text, "--json"], 60)
    assert code == 2 and "--max-shard-size" in err and not (tmp_path / "o").exists()


def test_destination_not_empty_and_no_config(qwen_bin, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(CheckpointError, match="never overwrites"):
        convert_checkpoint(str(qwen_bin[0]), str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save({"w": torch.zeros(2)}, bare / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="--no-probe"):
        convert_checkpoint(str(bare), str(tmp_path / "o"))


def test_sharded_bin_and_safetensors_sources(qwen_bin, tmp_path):
    """A .bin sharded with pytorch_model.bin.index.json, and a legacy (pre-zip) .bin, convert like the single .bin;
    a sharded safetensors source re-shards and casts."""
    src, state = qwen_bin
    sharded = tmp_path / "sharded-bin"
    sharded.mkdir()
    (sharded / "config.json").write_text((src / "config.json").read_text())
    names = list(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for file, part in halves.items():
        torch.save({n: state[n] for n in part}, sharded / file)
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {n: f for f, part in halves.items() for n in part}}))
    a = convert_checkpoint(str(sharded), str(tmp_path / "a"), probe=False)
    assert a.source_files == list(halves) and a.verify["tensors"]["identical"]
    # lm_head and the embedding are in different files here: no shared storage, so both are written
    assert a.dropped_aliases == [] and set(_read_all(tmp_path / "a")) == set(state)

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((src / "config.json").read_text())
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    b = convert_checkpoint(str(legacy), str(tmp_path / "b"), probe=False)
    assert any("legacy" in n for n in b.notes) and b.verify["tensors"]["identical"]

    c = convert_checkpoint(str(tmp_path / "b"), str(tmp_path / "c"), max_shard_size="50KB", dtype="fp16", probe=False)
    written = _read_all(tmp_path / "c")
    assert c.source_format == "safetensors" and len(c.shards) > 2
    assert all(torch.equal(t, state[k].to(torch.float16)) for k, t in written.items())
