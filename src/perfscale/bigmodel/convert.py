"""`convert_checkpoint`: .bin (or safetensors) -> sharded safetensors in the layout transformers writes.

Streaming: each tensor is read (a mapped .bin page range, or a safetensors byte range), cast if
asked, written, and its mapped pages given back (streaming.release_mapped) before the next one, so
host RAM stays near the largest tensor, not the checkpoint. Shards are laid out by huggingface_hub's
`split_torch_state_dict_into_shards` (what save_pretrained uses) on meta tensors of the output dtype,
named model-0000i-of-0000N.safetensors with model.safetensors.index.json
(`metadata.total_size` / `total_parameters`, `weight_map`), or model.safetensors when one shard.
Tied weights (names that view one storage and that the model class ties) are stored once, under the
name save_pretrained keeps. Everything is written to a temporary folder next to the destination and
renamed into place at the end: a failure leaves nothing behind.
Verification: every output tensor read back with safe_open equals its source (bit for bit, after the
cast), and from_pretrained on the source and on the output give bit-identical outputs on a probe input.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.bigmodel.errors import CheckpointError
from perfscale.bigmodel.files import (SAFE_INDEX, SAFE_WEIGHTS, ShardFile, TensorRecord, find_checkpoint, load_bin,
                                      read_shards)
from perfscale.bigmodel.rss import PeakRss, max_rss_bytes
from perfscale.bigmodel.sizes import parse_dtype, parse_size, torch_dtype
from perfscale.bigmodel.streaming import release_mapped, write_streaming

WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".index.json", ".msgpack", ".h5", ".ckpt")


@dataclass(frozen=True)
class OutputShard:
    file: str
    file_bytes: int
    tensors: int
    tensor_bytes: int
    over_limit: bool  # one tensor alone is larger than max_shard_size (save_pretrained does the same)


@dataclass(frozen=True)
class ConvertResult:
    source: str
    destination: str
    source_format: str
    source_files: list[str]
    dtype: str | None  # output dtype (None: each tensor's own)
    max_shard_size: int
    shards: list[OutputShard]
    index_file: str | None
    total_size: int
    total_parameters: int
    dropped_aliases: list[dict[str, str]]  # {"dropped": name, "kept": name}: tied, stored once
    copied_files: list[str]
    largest_shard_bytes: int
    largest_tensor_bytes: int
    baseline_rss_bytes: int  # RSS when writing started
    peak_rss_bytes: int  # highest RSS sampled (every 2 ms) while writing
    process_max_rss_bytes: int  # getrusage's ru_maxrss after writing: the process's peak so far (upper bound)
    write_seconds: float
    verify: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_destination(to: str) -> Path:
    dest = Path(to).expanduser()
    try:
        exists = dest.exists()
        busy = exists and (not dest.is_dir() or any(dest.iterdir()))
    except OSError as exc:
        raise CheckpointError(f"Destination {str(to)[:160]!r} cannot be used ({exc.strerror}). Pass a new folder with --to.") from exc
    if busy:
        raise CheckpointError(f"Destination {dest} already exists and is not an empty folder. Pass a new folder with --to "
                              "(perfscale never overwrites a checkpoint).")
    if not dest.parent.is_dir():
        raise CheckpointError(f"The folder {dest.parent} that should hold {dest.name} does not exist. Create it first.")
    return dest


class _Sources:
    """Read each source tensor on demand: .bin via its mapped state dict, safetensors by byte range."""

    def __init__(self, shards: list[ShardFile]) -> None:
        self._shards = {s.name: s for s in shards}
        self._bins: dict[str, tuple[dict, bool]] = {}

    def tensor(self, record: TensorRecord):
        """(tensor, mapped): the source tensor; `mapped` when its pages belong to a file mapping."""
        import torch

        shard = self._shards[record.file]
        if shard.format == "safetensors":
            out = torch.empty(record.shape, dtype=torch_dtype(record.dtype))
            with open(shard.path, "rb") as fh:
                fh.seek(record.offset)
                view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
                if fh.readinto(view) != record.nbytes:
                    raise CheckpointError(f"{shard.path} ended inside tensor {record.name}: truncated. Re-download it.")
            return out, False
        if record.file not in self._bins:
            self._bins[record.file] = load_bin(shard.path)
        state, mapped = self._bins[record.file]
        return state[record.name], mapped

    def close(self) -> None:
        self._bins.clear()


def _prepared(src, dtype: str | None):
    """The tensor as it is written: cast when asked, contiguous, plain CPU memory."""

    out = src
    if dtype is not None and src.is_floating_point() and str(src.dtype) != f"torch.{dtype}":
        out = src.to(torch_dtype(dtype))
    if not out.is_contiguous():
        out = out.contiguous()
    return out


def _choose_names(records: list[TensorRecord], expected) -> tuple[list[TensorRecord], list[dict[str, str]], list[str]]:
    """Drop names that alias another (same storage, offset, shape, dtype) and that the model ties to it."""
    groups: dict[tuple, list[TensorRecord]] = {}
    for r in records:
        key = (r.storage, r.offset, r.shape, r.dtype) if r.storage is not None else (r.file, r.name)
        groups.setdefault(key, []).append(r)
    tied = {}
    if expected is not None:
        for g in expected.tie_groups:
            for n in g:
                tied[n] = set(g)
        keep_names = expected.transformers_keys | expected.original_keys
    kept, dropped, notes = [], [], []
    drop: set[str] = set()
    for group in groups.values():
        if len(group) == 1:
            continue
        names = [r.name for r in group]
        if expected is not None and all(tied.get(names[0], set()) >= {n} for n in names):
            keeper = next((n for n in names if n in keep_names), names[0])
            for n in names:
                if n != keeper:
                    drop.add(n)
                    dropped.append({"dropped": n, "kept": keeper})
        else:
            notes.append(f"{', '.join(names)} share one storage but the model does not tie them: each is written")
    kept = [r for r in records if r.name not in drop]
    return kept, dropped, notes


def _copy_side_files(root: Path, tmp: Path, dtype: str | None) -> list[str]:
    copied = []
    for item in sorted(root.iterdir()):
        if not item.is_file() or item.name.endswith(WEIGHT_SUFFIXES):
            continue
        shutil.copy2(item, tmp / item.name)
        copied.append(item.name)
    if dtype is not None and (tmp / "config.json").is_file():
        config = json.loads((tmp / "config.json").read_text())
        config["dtype"] = dtype  # transformers 5's key (from_pretrained's default dtype="auto" reads it)
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return copied


def convert_checkpoint(path: str, to: str, max_shard_size: str | int = "5GB", dtype: str | None = None,
                       verify: bool = True, probe: bool = True) -> ConvertResult:
    """Convert a checkpoint folder to sharded safetensors in `to` (a new folder)."""
    limit = parse_size(max_shard_size)
    out_dtype = parse_dtype(dtype)
    found = find_checkpoint(path)
    dest = _check_destination(to)
    has_config = (found.root / "config.json").is_file()
    if probe and not has_config:
        raise CheckpointError(f"{found.root} has no config.json, so the output cannot be checked with from_pretrained. "
                              "Add the model's config.json, or pass --no-probe to convert the weights alone.")
    shards, notes = read_shards(found)
    records = [r for s in shards for r in s.records]
    if not records:
        raise CheckpointError(f"{found.root} holds no tensors. Pass a folder with weights.")
    expected = spec = None
    if has_config:
        from perfscale.bigmodel.model_keys import expected_keys
        from perfscale.specs.model import load_model_spec

        spec = load_model_spec(str((found.root / "config.json").resolve()))
        expected = expected_keys(spec)
    kept, dropped, alias_notes = _choose_names(records, expected)
    notes += alias_notes
    out_bytes = {r.name: _out_nbytes(r, out_dtype) for r in kept}
    out_dtypes = {r.name: _out_dtype(r, out_dtype) for r in kept}
    split = _split(kept, out_dtypes, limit)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    sources = _Sources(shards)
    by_name = {r.name: r for r in kept}
    try:
        written: list[OutputShard] = []
        start = time.perf_counter()
        with PeakRss(interval=0.002) as rss:
            for file, names in split.items():
                entries = [(n, out_dtypes[n], by_name[n].shape, out_bytes[n]) for n in names]
                size = write_streaming(tmp / file, entries, _stream(names, by_name, sources, out_dtype),
                                       {"format": "pt"})
                written.append(OutputShard(file=file, file_bytes=size, tensors=len(names),
                                           tensor_bytes=sum(out_bytes[n] for n in names),
                                           over_limit=sum(out_bytes[n] for n in names) > limit))
        write_seconds = time.perf_counter() - start
        process_max = max_rss_bytes()
        total_size = sum(out_bytes.values())
        total_params = sum(r.numel for r in kept)
        index_file = None
        if len(split) > 1:
            index_file = SAFE_INDEX
            weight_map = {n: file for file, names in split.items() for n in names}
            (tmp / SAFE_INDEX).write_text(json.dumps({"metadata": {"total_parameters": total_params, "total_size": total_size},
                                                      "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
        copied = _copy_side_files(found.root, tmp, out_dtype)
        checks: dict[str, Any] = {}
        if verify:
            checks["tensors"] = _compare_tensors(tmp, split, by_name, sources, out_dtype)
        sources.close()
        if probe:
            checks["probe"] = _probe(found.root, tmp, spec, out_dtype or _main_dtype(kept))
        if dest.exists():
            dest.rmdir()  # an empty folder (checked above)
        os.replace(tmp, dest)
    except BaseException:
        sources.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConvertResult(
        source=str(path), destination=str(dest), source_format=found.format, source_files=[s.name for s in shards],
        dtype=out_dtype, max_shard_size=limit, shards=written, index_file=index_file, total_size=total_size,
        total_parameters=total_params, dropped_aliases=dropped, copied_files=copied,
        largest_shard_bytes=max(s.file_bytes for s in written), largest_tensor_bytes=max(out_bytes.values()),
        baseline_rss_bytes=rss.start, peak_rss_bytes=rss.peak, process_max_rss_bytes=process_max,
        write_seconds=write_seconds, verify=checks, notes=notes)


def _out_dtype(r: TensorRecord, out_dtype: str | None) -> str:
    floating = r.dtype in ("float32", "float16", "bfloat16", "float64")
    return out_dtype if out_dtype is not None and floating else r.dtype


def _out_nbytes(r: TensorRecord, out_dtype: str | None) -> int:
    return r.numel * torch_dtype(_out_dtype(r, out_dtype)).itemsize


def _main_dtype(records: list[TensorRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        if r.dtype in ("float32", "float16", "bfloat16"):
            counts[r.dtype] = counts.get(r.dtype, 0) + r.numel
    return max(counts, key=counts.get) if counts else "float32"


def _split(kept: list[TensorRecord], out_dtypes: dict[str, str], limit: int) -> dict[str, list[str]]:
    """Shard layout from huggingface_hub (as save_pretrained), on meta tensors of the output dtype."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards

    meta = {r.name: torch.empty(r.shape, dtype=torch_dtype(out_dtypes[r.name]), device="meta") for r in kept}
    plan = split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors", max_shard_size=limit)
    if not plan.is_sharded:
        return {SAFE_WEIGHTS: list(meta)}
    return {file: list(names) for file, names in plan.filename_to_tensors.items()}


def _stream(names, by_name, sources: _Sources, out_dtype):
    for name in names:
        src, mapped = sources.tensor(by_name[name])
        out = _prepared(src, out_dtype)
        yield out
        if mapped:
            release_mapped(src)
        del src, out


def _compare_tensors(tmp: Path, split, by_name, sources: _Sources, out_dtype) -> dict[str, Any]:
    """Read every output tensor back (safe_open) and compare it with its source, bit for bit."""
    import torch
    from safetensors import safe_open

    compared, differing = 0, []
    for file, names in split.items():
        with safe_open(str(tmp / file), framework="pt") as handle:
            for name in names:
                got = handle.get_tensor(name)
                src, mapped = sources.tensor(by_name[name])
                want = _prepared(src, out_dtype)
                if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got.view(-1).view(torch.uint8),
                                                                                       want.reshape(-1).view(torch.uint8)):
                    differing.append(name)
                compared += 1
                if mapped:
                    release_mapped(src)
                del got, src, want
    if differing:
        raise CheckpointError(f"The converted tensors differ from the source for {', '.join(differing[:5])}: the output "
                              "was not kept. This is a bug in perfscale; please report it.")
    return {"compared": compared, "identical": True}


def _probe(src_root: Path, out_root: Path, spec, dtype: str) -> dict[str, Any]:
    """from_pretrained on the source and on the output, one forward on the same input: outputs bit-identical."""
    import torch

    from perfscale.bigmodel.quiet import quiet_transformers

    with quiet_transformers():
        import transformers

        cls = getattr(transformers, spec.architecture, None) or transformers.AutoModel
        vocab = int(spec.vocab_size)
        ids = (torch.arange(16, dtype=torch.long).reshape(1, 16) * 7919 + 3) % vocab
        inputs = {"input_ids": ids}
        if spec.is_encoder_decoder:
            inputs["decoder_input_ids"] = ids[:, :4]
        outputs = []
        for root in (src_root, out_root):
            model = cls.from_pretrained(str(root), dtype=torch_dtype(dtype))
            model.eval()
            with torch.no_grad():
                out = model(**inputs)
            first = out[0] if isinstance(out, tuple) else next(iter(out.values()))
            outputs.append(first.detach().clone())
            del model, out
    identical = bool(outputs[0].dtype == outputs[1].dtype and torch.equal(outputs[0], outputs[1]))
    if not identical:
        diff = (outputs[0].float() - outputs[1].float()).abs().max().item()
        raise CheckpointError(f"from_pretrained on the output gives different outputs from the source (max |diff| {diff:g}) "
                              "on the probe input: the output was not kept. Please report this with the checkpoint's config.")
    return {"class": cls.__name__, "dtype": dtype, "input_shape": list(ids.shape), "output_shape": list(outputs[0].shape),
            "identical": True}
