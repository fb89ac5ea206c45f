"""Writing safetensors one tensor at a time, and giving mapped source pages back as it goes.

safetensors' `save_file` takes a dict of every tensor of the file at once: converting a dtype or
reading a mapped .bin for it holds a whole shard in memory (and a mapped source's pages stay
resident once touched). This writer emits the same format (safetensors' spec: 8-byte little-endian
header length, JSON header with dtype, shape and data_offsets per tensor plus `__metadata__`, padded
with spaces to 8 bytes, then the data) from a header computed up front, writing each tensor's bytes
as it comes; the result is read back with `safe_open` and compared tensor by tensor (convert.py).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

from perfscale.bigmodel.files import TORCH_TO_SAFETENSORS

_MADV_DONTNEED = 4  # Linux <sys/mman.h>


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def release_mapped(tensor) -> None:
    """Drop a file-mapped tensor's pages from this process (MADV_DONTNEED; Linux).

    Only for tensors of a read-only private file mapping (torch.load(mmap=True) that nobody wrote):
    their clean pages are re-read from the file if touched again, so nothing is lost; RSS falls back.
    Whole pages around the tensor are dropped, which for neighbours means a re-read, not a change.
    """
    if _LIBC is None or tensor.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    end = -(-(tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page) * page
    _LIBC.madvise(start, end - start, _MADV_DONTNEED)


def header_bytes(entries: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]) -> bytes:
    """The header for (name, torch dtype name, shape, nbytes) in file order."""
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_streaming(path: Path, entries: list[tuple[str, str, tuple[int, ...], int]], tensors: Iterable,
                    metadata: dict[str, str]) -> int:
    """Write `tensors` (an iterable yielding each entry's contiguous CPU tensor, in order); bytes written.

    A tensor whose dtype, shape or size is not its entry's raises ValueError (a bug, not a user error).
    """
    import torch

    written = 0
    with open(path, "wb") as fh:
        head = header_bytes(entries, metadata)
        fh.write(head)
        written += len(head)
        for (name, dtype, shape, nbytes), tensor in zip(entries, tensors, strict=True):
            if str(tensor.dtype).removeprefix("torch.") != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{name}: got {tensor.dtype} {tuple(tensor.shape)}, header says {dtype} {shape}")
            if nbytes:
                flat = tensor.reshape(-1).view(torch.uint8)
                fh.write(memoryview(flat.numpy()))
            written += nbytes
    return written
