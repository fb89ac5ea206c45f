"""Measured loading: wall time and peak host RSS of from_pretrained's loading paths, each in a fresh process.

Paths (what a user chooses between, transformers "Instantiate a big model"):
  defaults   from_pretrained(path)                        (transformers 5: dtype="auto", the checkpoint's)
  dtype      from_pretrained(path, dtype=<--dtype>)        explicit dtype (a cast when it differs)
  offload    from_pretrained(path, device_map="auto", max_memory={"cpu": 3/4 of the weights}, offload_folder=tmp)
             CPU + disk offload (on a GPU machine: max_memory={0: half, "cpu": a quarter})
Safetensors vs .bin and sharded vs single file are different folders (write them with
`perfscale checkpoint convert`); pass several folders to compare them.
Each (folder, path) runs `repeats` times, interleaved (A B C A B C ...), each in a new interpreter
(load_worker.py), so no run inherits another's memory or caches (the OS page cache is shared: the
first run of a folder may read from disk, later ones from memory; the spread shows it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.bigmodel.errors import CheckpointError
from perfscale.errors import InvalidConfigError, choice_error

PATHS = ("defaults", "dtype", "offload")
MAX_REPEATS = 50


@dataclass(frozen=True)
class LoadRun:
    folder: str
    path: str
    kwargs: dict[str, Any]
    checkpoint_bytes: int  # weight bytes of the files loaded (inspect's tensor bytes)
    format: str
    shards: int
    load_s: list[float]
    import_s: list[float]
    rss_load_bytes: list[int]  # peak RSS during from_pretrained minus the RSS before it
    rss_resident_bytes: list[int]  # RSS once every parameter was read, minus the RSS before the load
    rss_peak_bytes: list[int]  # the process's peak RSS during the load (interpreter and imports included)
    device_peak_bytes: int | None
    devices: list[str]
    failed: str | None = None

    @property
    def median_load_s(self) -> float | None:
        return statistics.median(self.load_s) if self.load_s else None

    @property
    def rss_ratio(self) -> float | None:
        """Median of (peak RSS during the load, or the RSS with every weight resident if higher) over the RSS before
        it, / checkpoint bytes (transformers' goal with mmap: about 1)."""
        if not self.rss_load_bytes or not self.checkpoint_bytes:
            return None
        worst = [max(a, b) for a, b in zip(self.rss_load_bytes, self.rss_resident_bytes, strict=True)]
        return statistics.median(worst) / self.checkpoint_bytes


@dataclass(frozen=True)
class LoadResult:
    runs: list[LoadRun]
    repeats: int
    python: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for d, run in zip(data["runs"], self.runs, strict=True):
            d["median_load_s"] = run.median_load_s
            d["rss_ratio"] = run.rss_ratio
            d["median_rss_load_bytes"] = statistics.median(run.rss_load_bytes) if run.rss_load_bytes else None
            d["median_rss_resident_bytes"] = statistics.median(run.rss_resident_bytes) if run.rss_resident_bytes else None
        return data


def _path_kwargs(path: str, dtype: str, weights: int, offload_dir: str) -> dict[str, Any]:
    if path == "defaults":
        return {}
    if path == "dtype":
        return {"dtype": dtype}
    import torch

    if torch.cuda.is_available():
        memory = {0: max(1, weights // 2), "cpu": max(1, weights // 4)}
    else:
        memory = {"cpu": max(1, weights * 3 // 4)}
    return {"device_map": "auto", "max_memory": memory, "offload_folder": offload_dir}


def measure_loading(folders: list[str], paths: tuple[str, ...] | list[str] = ("defaults",), dtype: str = "float32",
                    repeats: int = 1, timeout_s: float = 600.0) -> LoadResult:
    """Time from_pretrained for every folder x path, `repeats` times each, interleaved, in fresh processes."""
    from perfscale.bigmodel.inspection import inspect_checkpoint
    from perfscale.bigmodel.sizes import parse_dtype

    if not folders:
        raise InvalidConfigError("No model folder given: pass one or more folders holding config.json and weights.")
    if not paths:
        raise InvalidConfigError(f"No loading path given. Choose from: {', '.join(PATHS)} (comma-separated).")
    for p in paths:
        if p not in PATHS:
            raise choice_error("loading path", p, PATHS, "Pass them comma-separated, e.g. --paths defaults,dtype,offload.")
    if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise InvalidConfigError(f"repeats {repeats!r} must be an integer from 1 to {MAX_REPEATS}.")
    torch_dtype = parse_dtype(dtype) or "float32"
    folders = [str(f) for f in folders]
    infos = []
    for folder in folders:
        info = inspect_checkpoint(folder)
        if info.model is None:
            raise CheckpointError(f"{folder} has no usable config.json, so from_pretrained cannot load it. Pass a folder "
                                  "written by save_pretrained.")
        infos.append(info)
    notes = []
    with tempfile.TemporaryDirectory(prefix="perfscale-load-") as scratch:
        cells = [(f, info, p) for f, info in zip(folders, infos, strict=True) for p in paths]
        samples: dict[int, list[dict]] = {i: [] for i in range(len(cells))}
        failures: dict[int, str] = {}
        for r in range(repeats):
            for i, (folder, info, p) in enumerate(cells):
                if i in failures:
                    continue
                offload = os.path.join(scratch, f"offload-{i}-{r}")
                kwargs = _path_kwargs(p, torch_dtype, info.tensor_bytes, offload)
                out = _run_worker(str(Path(folder).resolve()), info.model.architecture, kwargs, timeout_s)
                if "error" in out:
                    failures[i] = out["error"]
                else:
                    samples[i].append(out)
        runs = []
        for i, (folder, info, p) in enumerate(cells):
            got = samples[i]
            kwargs = _path_kwargs(p, torch_dtype, info.tensor_bytes, "<temporary folder>")
            runs.append(LoadRun(
                folder=folder, path=p, kwargs=kwargs, checkpoint_bytes=info.tensor_bytes, format=info.format,
                shards=len(info.shards), load_s=[s["load_s"] for s in got], import_s=[s["import_s"] for s in got],
                rss_load_bytes=[s["rss_peak_bytes"] - s["rss_before_bytes"] for s in got],
                rss_resident_bytes=[s["rss_resident_bytes"] - s["rss_before_bytes"] for s in got],
                rss_peak_bytes=[s["rss_peak_bytes"] for s in got],
                device_peak_bytes=max((s["device_peak_bytes"] or 0 for s in got), default=None) if got and got[0]["device_peak_bytes"] is not None else None,
                devices=got[0]["devices"] if got else [], failed=failures.get(i)))
    return LoadResult(runs=runs, repeats=repeats, python=sys.version.split()[0], notes=notes)


def _run_worker(path: str, architecture: str, kwargs: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    spec = json.dumps({"path": path, "class": architecture, "kwargs": kwargs})
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "perfscale.bigmodel.load_worker", spec], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode} after {time.perf_counter() - start:.1f} s: {' | '.join(tail)[-600:]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no result from the worker (stdout: {proc.stdout[-300:]!r})"}
