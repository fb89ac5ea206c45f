"""Finding and reading checkpoint files without reading weights.

safetensors: the library's own reader (`safe_open`: it validates the header and that the file covers
every tensor) for names, dtypes, shapes and `__metadata__`, and the header's `data_offsets` for each
tensor's exact bytes (format: 8-byte little-endian header length, JSON header, data;
https://github.com/huggingface/safetensors#format).
.bin: `torch.load(weights_only=True, mmap=True)`: the pickle is unpickled by torch's restricted
unpickler (tensors and plain containers only; anything else is refused, never run) and the tensor
data stays in the file, mapped, until touched. Files in the legacy (pre-zip) format cannot be mapped
and are read whole, still with weights_only=True.

The file names and the index format are transformers' (`SAFE_WEIGHTS_NAME`, `WEIGHTS_INDEX_NAME`):
an index json holds `metadata.total_size` and `weight_map` (tensor name -> shard file).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscale.bigmodel.errors import CheckpointError, UnsafePickleError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

# safetensors dtype names (the format's spec) -> torch dtype names.
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
TORCH_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorRecord:
    """One tensor of a checkpoint, as its file describes it (no data read)."""

    name: str
    file: str  # shard file name, relative to the checkpoint folder
    dtype: str  # torch dtype name
    shape: tuple[int, ...]
    nbytes: int
    # .bin: the storage this tensor views (file, storage id) and the view's byte offset in it, so
    # that aliases (tied weights saved twice by torch.save) are found; None for safetensors.
    storage: tuple[str, int] | None = None
    offset: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ShardFile:
    """One weights file: its format, size on disk, and tensors."""

    name: str
    path: Path
    format: str  # safetensors | pytorch-bin | pytorch-bin-legacy
    file_bytes: int
    records: list[TensorRecord]
    header_bytes: int = 0  # safetensors: 8 + the JSON header's length
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class CheckpointFiles:
    """The weights of one checkpoint: the files transformers would load, and the index if any."""

    root: Path
    format: str  # safetensors | pytorch-bin
    files: list[Path]
    index_path: Path | None
    index: dict[str, Any] | None
    other_formats: list[str]  # weight files of another format that are present but not the ones loaded


def _shown(path: Any) -> str:
    text = str(path)
    return text if len(text) <= 160 else text[:157] + "..."


def find_checkpoint(path: str | os.PathLike) -> CheckpointFiles:
    """The weight files of a folder (or one weights/index file), as from_pretrained picks them:
    safetensors first (sharded via its index, else model.safetensors), then pytorch_model.bin."""
    p = Path(path).expanduser()
    try:
        is_dir, is_file = p.is_dir(), p.is_file()
    except OSError as exc:
        raise CheckpointError(f"Checkpoint path {_shown(path)!r} cannot be used ({exc.strerror}). "
                              "Pass a model folder, a .safetensors/.bin file, or an index json.") from exc
    if is_file:
        return _from_file(p)
    if not is_dir:
        raise CheckpointError(f"Checkpoint {_shown(path)!r} does not exist. Pass a model folder (the one holding "
                              "config.json and the weights), a .safetensors/.bin file, or an index json.")
    names = {q.name for q in p.iterdir()}
    safe = [n for n in (SAFE_INDEX, SAFE_WEIGHTS) if n in names]
    binary = [n for n in (BIN_INDEX, BIN_WEIGHTS) if n in names]
    if safe:
        found = _from_file(p / safe[0])
        found.other_formats = binary
        return found
    if binary:
        return _from_file(p / binary[0])
    loose = sorted(n for n in names if n.endswith(".safetensors"))
    if loose:
        return CheckpointFiles(p, "safetensors", [p / n for n in loose], None, None, [])
    listing = ", ".join(sorted(names)[:12]) or "nothing"
    raise CheckpointError(
        f"Folder {_shown(p)} has no weights: none of {SAFE_INDEX}, {SAFE_WEIGHTS}, {BIN_INDEX}, {BIN_WEIGHTS} or any "
        f".safetensors file (it holds: {listing}). Pass the folder that save_pretrained wrote, or download the "
        "weights (`hf download OWNER/NAME --local-dir DIR`).")


def _from_file(p: Path) -> CheckpointFiles:
    if p.name.endswith(".index.json"):
        index = _read_index(p)
        fmt = "safetensors" if p.name.endswith(".safetensors.index.json") else "pytorch-bin"
        shard_names = sorted(set(index["weight_map"].values()))
        missing = [n for n in shard_names if not (p.parent / n).is_file()]
        if missing:
            raise CheckpointError(
                f"Index {_shown(p)} names {len(missing)} shard file(s) that are not in {_shown(p.parent)}: "
                f"{', '.join(missing[:5])}. The download is incomplete or the index belongs to other shards: "
                "download the missing files, or re-save the model.")
        return CheckpointFiles(p.parent, fmt, [p.parent / n for n in shard_names], p, index, [])
    if p.name.endswith(".safetensors"):
        return CheckpointFiles(p.parent, "safetensors", [p], None, None, [])
    if p.name.endswith((".bin", ".pt", ".pth")):
        return CheckpointFiles(p.parent, "pytorch-bin", [p], None, None, [])
    if p.name == "config.json":
        return find_checkpoint(p.parent)
    raise CheckpointError(f"{_shown(p)} is not a checkpoint file: expected a folder, a .safetensors, .bin or "
                          "*.index.json file.")


def _read_index(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Index {_shown(p)} cannot be read as JSON ({exc}). Re-download it or re-save the model.") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"Index {_shown(p)} has no valid `weight_map` (tensor name -> shard file). "
                              "Re-download it or re-save the model.")
    for shard in set(weight_map.values()):
        if "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CheckpointError(f"Index {_shown(p)} names shard {shard!r}, which is not a file name in its folder. "
                                  "Re-download the index.")
    return data


def read_safetensors(path: Path) -> ShardFile:
    """Names, dtypes, shapes and exact bytes of a safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            metadata = handle.metadata() or {}
    except Exception as exc:  # SafetensorError (truncated, bad header) or OSError
        if "unable to mmap" not in str(exc):
            raise CheckpointError(
                f"{_shown(path)} is not a readable safetensors file ({type(exc).__name__}: {exc}). It is truncated or "
                "corrupt: re-download it (compare its size with the Hub's) or re-save the model.") from exc
        # safe_open maps the whole file; a file larger than the address space the kernel grants (overcommit)
        # cannot be mapped. Its header is read directly then, with the same coverage check.
        names, metadata = None, None
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if 8 + length > size:
            raise CheckpointError(f"{_shown(path)} is truncated: its header claims {length:,} bytes but the file has "
                                  f"{size:,}. Re-download it.")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{_shown(path)} has a corrupt safetensors header ({exc}). Re-download it.") from exc
    data_start = 8 + length
    if names is None:
        metadata = header.pop("__metadata__", None) or {}
        names = sorted(header)
        end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if data_start + end != size:
            raise CheckpointError(f"{_shown(path)} is truncated or padded: its tensors end at byte {data_start + end:,} "
                                  f"but the file has {size:,}. Re-download it.")
    records = []
    for name in names:
        entry = header[name]
        begin, end = entry["data_offsets"]
        records.append(TensorRecord(name=name, file=path.name, dtype=SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"]),
                                    shape=tuple(entry["shape"]), nbytes=end - begin, offset=data_start + begin))
    return ShardFile(name=path.name, path=path, format="safetensors", file_bytes=size, records=records,
                     header_bytes=data_start, metadata=dict(metadata))


def _refusal(path: Path, exc: Exception) -> UnsafePickleError:
    detail = " ".join(line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported global" in line)
    return UnsafePickleError(
        f"{_shown(path)} is a pickle that needs more than torch.load(weights_only=True) to read "
        f"({detail or type(exc).__name__}). It would run code named in the file, so perfscale refuses it and ran "
        "nothing. If you trust its source, re-save it as safetensors where that is acceptable "
        "(load it with weights_only=False, then save_pretrained), or ask the publisher for safetensors weights.")


def load_bin(path: Path, mmap: bool = True) -> tuple[dict[str, Any], bool]:
    """(state dict, mapped) of a .bin: torch's restricted unpickler only; data mapped, not read, when it can be."""
    import pickle
    import zipfile

    import torch

    legacy = not zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and not legacy)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise _refusal(path, exc) from exc
        raise CheckpointError(f"{_shown(path)} is not a PyTorch checkpoint (the restricted unpickler read no state dict "
                              "from it). It is truncated or another kind of file: re-download it.") from exc
    except Exception as exc:  # a truncated zip, not a pickle at all, ...
        raise CheckpointError(f"{_shown(path)} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc)[:300]}). It is truncated or not a torch.save file: re-download it.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{_shown(path)} holds a {type(state).__name__}, not a state dict (name -> tensor). "
                              "Pass a checkpoint written by save_pretrained or torch.save(model.state_dict()).")
    return state, mmap and not legacy


def bin_records(path: Path, state: dict[str, Any]) -> tuple[list[TensorRecord], list[str]]:
    """Records of a loaded .bin state dict, and the names of entries that are not tensors (skipped)."""
    import torch

    records, skipped = [], []
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            skipped.append(str(name))
            continue
        storage = value.untyped_storage()
        records.append(TensorRecord(
            name=str(name), file=path.name, dtype=str(value.dtype).removeprefix("torch."), shape=tuple(value.shape),
            nbytes=value.numel() * value.element_size(), storage=(path.name, storage.data_ptr()),
            offset=value.storage_offset() * value.element_size()))
    return records, skipped


def read_bin(path: Path) -> tuple[ShardFile, list[str]]:
    state, mapped = load_bin(path)
    records, skipped = bin_records(path, state)
    fmt = "pytorch-bin" if mapped else "pytorch-bin-legacy"
    return ShardFile(name=path.name, path=path, format=fmt, file_bytes=path.stat().st_size, records=records), skipped


def read_shards(found: CheckpointFiles) -> tuple[list[ShardFile], list[str]]:
    """Every shard's records, checked against the index; (shards, notes)."""
    shards, notes = [], []
    for path in found.files:
        if path.name.endswith(".safetensors"):
            shards.append(read_safetensors(path))
        else:
            shard, skipped = read_bin(path)
            shards.append(shard)
            if skipped:
                notes.append(f"{path.name}: {len(skipped)} entries are not tensors and were skipped ({', '.join(skipped[:3])})")
            if shard.format == "pytorch-bin-legacy":
                notes.append(f"{path.name} is in torch's legacy (pre-1.6) format: it cannot be memory-mapped, so it "
                             "was read whole (still with weights_only=True)")
    if found.index is not None:
        _check_index(found, shards)
    seen: dict[str, str] = {}
    for shard in shards:
        for r in shard.records:
            if r.name in seen:
                raise CheckpointError(f"Tensor {r.name!r} is in two shards ({seen[r.name]} and {shard.name}) of "
                                      f"{_shown(found.root)}: the files are from different saves. Re-download them.")
            seen[r.name] = shard.name
    return shards, notes


def _check_index(found: CheckpointFiles, shards: list[ShardFile]) -> None:
    weight_map = found.index["weight_map"]
    in_files = {r.name: s.name for s in shards for r in s.records}
    not_in_files = [n for n in weight_map if n not in in_files]
    wrong_file = [n for n, f in in_files.items() if n in weight_map and weight_map[n] != f]
    not_in_index = [n for n in in_files if n not in weight_map]
    problems = []
    if not_in_files:
        problems.append(f"{len(not_in_files)} tensor(s) of the index are in no shard ({', '.join(not_in_files[:3])})")
    if wrong_file:
        n = wrong_file[0]
        problems.append(f"{len(wrong_file)} tensor(s) are in another shard than the index says ({n}: index "
                        f"{weight_map[n]}, found in {in_files[n]})")
    if not_in_index:
        problems.append(f"{len(not_in_index)} tensor(s) of the shards are not in the index ({', '.join(not_in_index[:3])})")
    if problems:
        raise CheckpointError(f"Shards and index {_shown(found.index_path)} do not match: " + "; ".join(problems)
                              + ". The files come from different saves: re-download them together, or re-save the model.")
