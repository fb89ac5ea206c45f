"""`inspect_checkpoint`: shards, bytes and parameters per shard and per dtype, without loading a weight.

Bytes are the files' own: each safetensors tensor's `data_offsets` span, each .bin tensor's
elements x element size; a shard's bytes are its size on disk (header included). Parameters are
tensor elements, counting a storage that several names view (tied weights saved by torch.save) once.
The total is compared with the exact count of the config's model class (`perfscale models show`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.bigmodel.errors import CheckpointError
from perfscale.bigmodel.files import CheckpointFiles, ShardFile, TensorRecord, find_checkpoint, read_shards
from perfscale.errors import PerfscaleError


@dataclass(frozen=True)
class DtypeCount:
    tensors: int
    params: int
    bytes: int


@dataclass(frozen=True)
class ShardSummary:
    file: str
    format: str
    file_bytes: int | None  # size on disk (None: a hub file, not downloaded)
    header_bytes: int
    tensor_bytes: int
    tensors: int
    params: int
    dtypes: dict[str, DtypeCount]


@dataclass(frozen=True)
class ModelCheck:
    """The checkpoint against the model class its config.json names."""

    model: str
    architecture: str
    config_params: int  # exact parameters of the class (tied counted once)
    checkpoint_params: int  # without the tensors from_pretrained ignores (ignored_unexpected)
    buffer_params: int  # persistent buffers the class also saves
    matches: bool
    layout: str  # transformers | original (the key layout save_pretrained writes)
    missing: list[str]
    unexpected: list[str]
    ignored_unexpected: list[str]
    tied: list[dict[str, list[str]]]  # {"names": [...], "stored": [...]} per tied parameter
    no_split_modules: list[str]


@dataclass(frozen=True)
class InspectResult:
    path: str
    source: str  # local | hub
    format: str  # safetensors | pytorch-bin
    safe: bool
    safety: str
    index_file: str | None
    index_total_size: int | None
    shards: list[ShardSummary]
    dtypes: dict[str, DtypeCount]
    tensors: int
    params: int
    tensor_bytes: int
    file_bytes: int | None
    largest_shard_bytes: int
    shared: list[dict[str, Any]]  # names viewing one storage in a .bin (stored once on disk)
    model: ModelCheck | None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # everything, the model comparison included (it imports and builds the model class)
    read_seconds: float = 0.0  # finding and reading the files' headers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SAFETY = {
    "safetensors": "safe: safetensors holds only tensors (no code can run while loading)",
    "pytorch-bin": "pickle: read with torch.load(weights_only=True), which refuses anything but tensors and plain "
                   "containers; prefer safetensors (`perfscale checkpoint convert`)",
}


def _count(records: list[TensorRecord]) -> tuple[int, int, dict[str, DtypeCount], list[dict[str, Any]]]:
    """(params, bytes, per dtype, shared groups), each storage view counted once."""
    seen: dict[tuple, list[str]] = {}
    by_dtype: dict[str, list[int]] = {}
    params = nbytes = 0
    for r in records:
        key = (r.storage, r.offset, r.shape, r.dtype) if r.storage is not None else ("safetensors", r.file, r.name)
        if key in seen:
            seen[key].append(r.name)
            continue
        seen[key] = [r.name]
        params += r.numel
        nbytes += r.nbytes
        counts = by_dtype.setdefault(r.dtype, [0, 0, 0])
        counts[0] += 1
        counts[1] += r.numel
        counts[2] += r.nbytes
    dtypes = {d: DtypeCount(*c) for d, c in sorted(by_dtype.items())}
    shared = [{"names": names, "bytes": next(r.nbytes for r in records if r.name == names[0])}
              for names in seen.values() if len(names) > 1]
    return params, nbytes, dtypes, shared


def _summaries(shards: list[ShardFile]) -> list[ShardSummary]:
    out = []
    for s in shards:
        params, nbytes, dtypes, _ = _count(s.records)
        out.append(ShardSummary(file=s.name, format=s.format, file_bytes=s.file_bytes, header_bytes=s.header_bytes,
                                tensor_bytes=nbytes, tensors=len(s.records), params=params, dtypes=dtypes))
    return out


def inspect_checkpoint(path: str, check_model: bool = True) -> InspectResult:
    """Inspect a local folder/file, or a hub id (headers only, over HTTP range requests)."""
    start = time.perf_counter()
    local = _is_local(path)
    if local:
        found = find_checkpoint(path)
        shards, notes = read_shards(found)
        source, root = "local", found.root
    else:
        found, shards, notes = _hub_shards(path)
        source, root = "hub", None
    read_seconds = time.perf_counter() - start
    records = [r for s in shards for r in s.records]
    params, nbytes, dtypes, shared = _count(records)
    summaries = _summaries(shards)
    index_total = None
    if found.index is not None:
        index_total = (found.index.get("metadata") or {}).get("total_size")
        if isinstance(index_total, (int, float)) and int(index_total) != nbytes:
            notes.append(f"the index's metadata.total_size ({int(index_total):,} B) differs from the tensors' bytes "
                         f"({nbytes:,} B)")
    for s in shards:
        if s.format == "safetensors" and s.file_bytes is not None:
            covered = s.header_bytes + sum(r.nbytes for r in s.records)
            if covered != s.file_bytes:
                notes.append(f"{s.name}: header + tensors = {covered:,} B but the file has {s.file_bytes:,} B")
    if found.other_formats:
        notes.append(f"also present, not loaded by from_pretrained (safetensors come first): {', '.join(found.other_formats)}")
    model = _check_model(path if not local else str(root.resolve()), records, params, notes) if check_model else None
    fmt = "safetensors" if all(s.format == "safetensors" for s in shards) else "pytorch-bin"
    file_sizes = [s.file_bytes for s in shards]
    return InspectResult(
        path=str(path), source=source, format=fmt, safe=fmt == "safetensors", safety=SAFETY[fmt],
        index_file=found.index_path.name if found.index_path else None,
        index_total_size=int(index_total) if isinstance(index_total, (int, float)) else None,
        shards=summaries, dtypes=dtypes, tensors=len(records), params=params, tensor_bytes=nbytes,
        file_bytes=None if None in file_sizes else sum(file_sizes),
        largest_shard_bytes=max((s.file_bytes or s.tensor_bytes for s in summaries), default=0),
        shared=shared, model=model, notes=notes, seconds=time.perf_counter() - start, read_seconds=read_seconds)


def _is_local(path: str) -> bool:
    p = Path(path).expanduser()
    try:
        if p.exists():
            return True
    except OSError:
        return True  # find_checkpoint says why the path is unusable
    parts = str(path).split("/")
    return not (len(parts) == 2 and all(parts) and not str(path).startswith((".", "/", "~")))


def _check_model(where: str, records: list[TensorRecord], params: int, notes: list[str]) -> ModelCheck | None:
    from perfscale.bigmodel.model_keys import compare_keys, expected_keys
    from perfscale.specs.model import load_model_spec

    try:
        spec = load_model_spec(where)
    except PerfscaleError as exc:
        notes.append(f"no model comparison: {exc}")
        return None
    expected = expected_keys(spec)
    keys = compare_keys(expected, {r.name for r in records})
    total = spec.params.total
    ignored = set(keys["ignored_unexpected"])
    params -= sum(r.numel for r in records if r.name in ignored)  # tensors from_pretrained drops are not weights
    matches = params in (total, total + expected.buffer_numel)
    if not matches:
        notes.append(f"the checkpoint holds {params:,} parameters, the config's {spec.architecture} has {total:,} "
                     f"({params - total:+,})")
    return ModelCheck(model=spec.name, architecture=spec.architecture, config_params=total, checkpoint_params=params,
                      buffer_params=expected.buffer_numel, matches=matches, **keys,
                      no_split_modules=list(expected.no_split_modules))


def _hub_shards(repo_id: str) -> tuple[CheckpointFiles, list[ShardFile], list[str]]:
    """Headers of a hub repo's safetensors files (huggingface_hub.get_safetensors_metadata: range requests)."""
    import os

    from perfscale.bigmodel.files import SAFETENSORS_DTYPES
    from perfscale.errors import OfflineError

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        raise OfflineError(f"{repo_id!r} is not a local path and HF_HUB_OFFLINE is set, so its headers cannot be "
                           f"fetched. Download it (`hf download {repo_id} --local-dir DIR`) and inspect DIR.")
    from huggingface_hub import get_safetensors_metadata

    try:
        meta = get_safetensors_metadata(repo_id)
    except Exception as exc:
        raise CheckpointError(f"Cannot read safetensors headers of hub repo {repo_id!r} ({type(exc).__name__}: "
                              f"{str(exc)[:200]}). Check the id (and `hf auth login` for gated models), or download it "
                              "and inspect the folder.") from exc
    shards = []
    for name, fm in sorted(meta.files_metadata.items()):
        recs = []
        for tname, info in fm.tensors.items():
            begin, end = info.data_offsets
            recs.append(TensorRecord(name=tname, file=name, dtype=SAFETENSORS_DTYPES.get(info.dtype, info.dtype),
                                     shape=tuple(info.shape), nbytes=end - begin))
        shards.append(ShardFile(name=name, path=Path(name), format="safetensors", file_bytes=None, records=recs,
                                metadata=dict(fm.metadata or {})))
    index = {"weight_map": meta.weight_map} if meta.sharded else None
    found = CheckpointFiles(Path(repo_id), "safetensors", [], Path("model.safetensors.index.json") if index else None,
                            index, [])
    return found, shards, ["hub: headers read over HTTP range requests; file sizes on disk not known"]
