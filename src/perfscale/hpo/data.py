"""The data of a study: a local text or JSONL file (default: the sentence corpus perfscale ships),
tokenized once in the parent, packed into blocks of `seq` tokens and split into train and held-out
blocks, written as .npy files that every trial process loads (no pickle: nothing loaded executes code).

Tokens: the model's own tokenizer when the model is a local folder that has one (loaded with
`AutoTokenizer.from_pretrained(folder)`, no remote code), else UTF-8 bytes (id = byte + 3, after
pad 0 / bos 1 / eos 2), which any model with a vocabulary of at least 259 can learn: the built-in
random-weight models have no tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscale.errors import ConfigFileError, InvalidConfigError

BYTE_OFFSET = 3  # ids 0, 1, 2: pad, bos, eos (the built-in models' special ids)
EOS_ID = 2
MIN_EVAL_BLOCKS = 4
MIN_TRAIN_BLOCKS = 8
DEFAULT_EVAL_FRACTION = 0.1
# Each evaluation runs every held-out block: by default at most 32 blocks (2,048 tokens at seq 64), a
# small part of a trial on 2 CPU cores (an evaluation of 128 blocks took 12-18 s on the loaded box).
# Chosen, not measured: a mean over 32 blocks is steady enough to rank trials that differ by >= 10%.
DEFAULT_MAX_EVAL_BLOCKS = 32


@dataclass(frozen=True)
class PreparedData:
    """Train and held-out blocks on disk, and what they were made from."""

    train_path: str
    eval_path: str
    train_blocks: int
    eval_blocks: int
    seq: int
    tokenizer: str  # "bytes" or the tokenizer folder
    source: str
    fingerprint: str  # of the text, the tokenizer, seq and the split: part of the study's identity

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tokenizer": self.tokenizer, "seq": self.seq, "train_blocks": self.train_blocks,
                "eval_blocks": self.eval_blocks, "train_tokens": self.train_blocks * self.seq, "fingerprint": self.fingerprint}


def read_texts(path: str | None, text_field: str = "text") -> tuple[list[str], str]:
    """The documents of a .txt file (one per non-empty line) or a .jsonl file (field `text_field` of each
    line); None: the shipped corpus."""
    if path is None:
        from perfscale.measure.corpus import load_sentences

        return load_sentences(), "the shipped sentence corpus (perfscale/data/corpus/sentences.txt)"
    p = Path(path)
    if p.is_dir():
        raise InvalidConfigError(f"--data {path!r} is a folder: give a .txt file (one document per line) or a .jsonl file "
                                 f"(one JSON object per line with a {text_field!r} field).")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"Cannot read the data file {path!r}: {exc}. Give a UTF-8 .txt or .jsonl file.") from exc
    if p.suffix.lower() in (".jsonl", ".json"):
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ConfigFileError(f"{path}: line {i} is not JSON ({exc}). A .jsonl file has one JSON object per line.") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise ConfigFileError(f"{path}: line {i} has no string field {text_field!r} (it has: {keys}). "
                                      "Name the field with --text-field.")
            texts.append(obj[text_field])
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    return texts, str(path)


def _tokenizer_folder(spec) -> str | None:
    loc = getattr(spec, "location", None)
    if loc and os.path.isdir(loc) and any(os.path.exists(os.path.join(loc, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return loc
    return None


def tokenize(texts: list[str], spec) -> tuple[list[int], str]:
    """One stream of token ids, documents separated by the end-of-sequence id."""
    folder = _tokenizer_folder(spec)
    if folder is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        eos = tok.eos_token_id if tok.eos_token_id is not None else (tok.sep_token_id or 0)
        ids: list[int] = []
        for enc in tok(texts, add_special_tokens=False)["input_ids"]:
            ids.extend(enc)
            ids.append(eos)
        return ids, folder
    if spec.vocab_size < 256 + BYTE_OFFSET:
        raise InvalidConfigError(f"{spec.name} has no tokenizer folder and a vocabulary of {spec.vocab_size} < 259: "
                                 "byte tokens do not fit. Use a local model folder with its tokenizer.")
    ids = []
    for text in texts:
        ids.extend(b + BYTE_OFFSET for b in text.encode("utf-8"))
        ids.append(EOS_ID)
    return ids, "bytes"


def prepare_data(spec, seq: int, workdir: str | Path, path: str | None = None, *, text_field: str = "text",
                 eval_fraction: float = DEFAULT_EVAL_FRACTION, max_eval_blocks: int = DEFAULT_MAX_EVAL_BLOCKS,
                 seed: int = 0) -> PreparedData:
    """Tokenize, pack, split (a seeded shuffle of the blocks) and write train.npy / eval.npy."""
    import numpy as np

    if not 0.0 < eval_fraction < 1.0:
        raise InvalidConfigError(f"--eval-fraction must be between 0 and 1 (exclusive), got {eval_fraction!r}.")
    texts, source = read_texts(path, text_field)
    ids, tokenizer = tokenize(texts, spec)
    n_blocks = len(ids) // seq
    n_eval = min(max_eval_blocks, int(round(n_blocks * eval_fraction)))
    n_train = n_blocks - n_eval
    if n_eval < MIN_EVAL_BLOCKS or n_train < MIN_TRAIN_BLOCKS:
        raise InvalidConfigError(
            f"The data in {source} is too small for the split: {len(ids):,} tokens make {n_blocks} blocks of --seq {seq}, "
            f"{n_train} for training and {n_eval} held out; at least {MIN_TRAIN_BLOCKS} and {MIN_EVAL_BLOCKS} are needed. "
            f"Give more text, a smaller --seq, or a larger --eval-fraction."
        )
    blocks = np.asarray(ids[: n_blocks * seq], dtype=np.int64).reshape(n_blocks, seq)
    order = np.random.default_rng(seed).permutation(n_blocks)
    eval_blocks, train_blocks = blocks[order[:n_eval]], blocks[order[n_eval:]]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = workdir / "train.npy", workdir / "eval.npy"
    np.save(train_path, train_blocks, allow_pickle=False)
    np.save(eval_path, eval_blocks, allow_pickle=False)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(blocks).tobytes())
    digest.update(json.dumps([tokenizer if tokenizer == "bytes" else "model", seq, n_eval, seed]).encode())
    return PreparedData(str(train_path), str(eval_path), int(n_train), int(n_eval), seq, tokenizer, source, digest.hexdigest()[:12])


__all__ = ["PreparedData", "prepare_data", "read_texts", "tokenize"]
