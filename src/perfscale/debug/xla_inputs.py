"""`debug xla`'s inputs: the stream of lengths (given, from a data file, or drawn from the shipped corpus), the
buckets, and a padded batch."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    """Lengths from a file: a JSON list of token-id lists, or text (one example per line), tokenized with the
    model folder's tokenizer when it has one, else counted in words and punctuation marks."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"--data {path!r} cannot be read ({exc.__class__.__name__}). "
                                 "Give a JSON file of token-id lists ([[1, 2], [3, 4, 5]]) or a UTF-8 text file, one example a line.") from exc
    if p.suffix == ".json":
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise InvalidConfigError(f"--data {path!r} is not valid JSON ({exc}). Give a list of token-id lists: [[1, 2], [3, 4, 5]].") from exc
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
            raise InvalidConfigError(f"--data {path!r} must hold a non-empty list of non-empty token-id lists: [[1, 2], [3, 4, 5]].")
        return [len(r) for r in rows], f"{path} ({len(rows)} examples)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InvalidConfigError(f"--data {path!r} holds no text. Give one example a line, or a JSON list of token-id lists.")
    tokenizer = None
    if tokenizer_dir and any((Path(tokenizer_dir) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer is not None:
        return [len(tokenizer(ln)["input_ids"]) for ln in lines], f"{path} ({len(lines)} lines, the model's tokenizer)"
    return [len(_WORD.findall(ln)) for ln in lines], f"{path} ({len(lines)} lines, counted in words and punctuation: no tokenizer)"


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

