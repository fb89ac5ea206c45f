"""`debug xla`'s inputs: the stream of lengths (given, from a data file, or drawn from the shipped corpus), the
buckets, and a padded batch."""

from __future__ import annotations

import re

from perfscale.debug.data_file import read_data_file
from perfscale.errors import InvalidConfigError

MAX_LEN = 4096
_WORD = re.compile(r"\w+|[^\w\s]")


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    """'16,32,64' -> [16, 32, 64]; None/'' -> None."""
    if text is None or not str(text).strip():
        return None
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_LEN:
            raise InvalidConfigError(f"{what} {text!r}: {part!r} is not an integer in 1..{MAX_LEN}. Give a comma-separated list, e.g. 12,40,33.")
        out.append(int(part))
    return out


def corpus_lengths() -> list[int]:
    """Sentence lengths of the shipped corpus (perfscale/data/corpus/sentences.txt), in word-piece-like units
    (words and punctuation marks): a realistic spread of lengths without a tokenizer."""
    from importlib.resources import files

    text = files("perfscale.data").joinpath("corpus/sentences.txt").read_text(encoding="utf-8")
    return [len(_WORD.findall(line)) for line in text.splitlines() if line.strip()]


def data_lengths(path: str, tokenizer_dir: str | None = None) -> tuple[list[int], str]:
    """Lengths of the examples in a --data file (debug/data_file.py: token-id lists, or text one example a line,
    tokenized with the model folder's tokenizer when it has one, else counted in words and punctuation marks)."""
    data = read_data_file(path, tokenizer_dir)
    if not data.lines:
        return [len(r) for r in data.rows], f"{path} ({len(data.rows)} examples)"
    if data.rows is not None:
        return [len(r) for r in data.rows], f"{path} ({len(data.lines)} lines, the model's tokenizer)"
    return [len(_WORD.findall(ln)) for ln in data.lines], f"{path} ({len(data.lines)} lines, counted in words and punctuation: no tokenizer)"


def draw(lengths: list[int], n: int, seed: int, max_len: int) -> list[int]:
    """n lengths drawn (seeded, with replacement) from a population of lengths, clipped to 2..max_len."""
    import random

    rng = random.Random(seed)
    return [min(max(2, x), max_len) for x in rng.choices(lengths, k=n)]


def default_buckets(max_len: int) -> list[int]:
    """Powers of two from 16 up to the first that holds max_len: a handful of shapes, at most 2x padding."""
    out = [16]
    while out[-1] < max_len:
        out.append(out[-1] * 2)
    return out



def pad_batch(rows: list[list[int]], length: int, pad: int):
    """Right-padded ids, attention mask and labels (-100 on padding, as DataCollatorForLanguageModeling)."""
    import torch

    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels

