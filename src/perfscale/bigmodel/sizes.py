"""Sizes and dtypes as users type them: `5GB` (10^9) or `5GiB` (2^30), `bf16` or `bfloat16`.

The size units follow transformers' `convert_file_size_to_int` (`max_shard_size` of
`save_pretrained`): decimal KB/MB/GB/TB, binary KiB/MiB/GiB/TiB, or a plain number of bytes.
"""

from __future__ import annotations

import re

from perfscale.errors import InvalidConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
# Bounds: a shard of at least 1 KB (smaller is a typo: one tensor per file) and at most 1 PB.
MIN_SIZE, MAX_SIZE = 10**3, 10**15


def parse_size(text: str | int, what: str = "--max-shard-size") -> int:
    """Bytes from `5GB`, `5 GB`, `5GiB`, `500MB`, `1.5GB` or `1000000` (bytes)."""
    example = "Use a number with a unit, e.g. 5GB (5 x 10^9 bytes), 5GiB (5 x 2^30 bytes), 500MB, or bytes (5000000000)."
    match = _SIZE.match(str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise InvalidConfigError(f"Bad {what} {str(text)[:80]!r}: not a size. Units: {', '.join(u for u in _UNITS if u)}. "
                                 f"{example}")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise InvalidConfigError(f"Bad {what} {str(text)[:80]!r}: {value:,.0f} bytes is outside {MIN_SIZE:,} to {MAX_SIZE:,}. "
                                 f"{example}")
    return int(value)


# What a user may type for a dtype -> torch's name (the vocabulary of from_pretrained's `dtype=`).
DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "half": "float16",
               "bf16": "bfloat16", "bfloat16": "bfloat16"}


def parse_dtype(text: str | None) -> str | None:
    """torch dtype name for a floating-point dtype name, or None for `None`/`auto` (keep each tensor's)."""
    if text is None or str(text).lower() in ("auto", "keep"):
        return None
    name = DTYPE_NAMES.get(str(text).lower())
    if name is None:
        raise InvalidConfigError(f"Unknown dtype {str(text)[:80]!r}. Choose from: {', '.join(DTYPE_NAMES)}, auto "
                                 "(keep each tensor's dtype).")
    return name


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)
