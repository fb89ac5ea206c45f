"""`--data` of the debug verbs (`debug overflow`, `debug xla`): a file of real examples, read here once.

A `.json` file holds token ids: a list of examples, [[1, 2], [3, 4, 5]], or one example, [1, 2, 3]. Any other
file is UTF-8 text, one example a non-blank line, tokenized with the model folder's own tokenizer when it has
one. What a verb makes of the examples is its own: overflow cuts one stream of ids into batches, xla keeps
their lengths (and counts words where there is no tokenizer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from perfscale.errors import InvalidConfigError

JSON_SHAPE = "a list of token-id lists, [[1, 2], [3, 4, 5]], or one list of token ids, [1, 2, 3]"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class DataFile:
    """The examples of a --data file."""

    path: str
    rows: list[list[int]] | None  # token ids per example; None: a text file and no tokenizer to read it with
    lines: list[str]  # a text file's examples (its non-blank lines); [] for a JSON file


def read_data_file(path: str | Path, tokenizer_dir: str | None = None) -> DataFile:
    """The examples in `path`; a file that cannot be read or holds no examples is an InvalidConfigError naming it."""
    shown = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"--data {shown!r} cannot be read ({type(exc).__name__}: {exc}). "
                                 f"Give a .json file of token ids ({JSON_SHAPE}) or a UTF-8 text file, one example a line.") from exc
    if file.suffix == ".json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidConfigError(f"--data {shown!r} is not valid JSON ({exc}). Give {JSON_SHAPE}.") from exc
        rows = value if isinstance(value, list) and value and all(isinstance(r, list) for r in value) else [value]
        if not all(isinstance(r, list) and r and all(_is_id(i) for i in r) for r in rows):
            raise InvalidConfigError(f"--data {shown!r} must hold {JSON_SHAPE}: no empty list, every id a whole number >= 0.")
        return DataFile(shown, rows, [])
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InvalidConfigError(f"--data {shown!r} holds no text. Give one example a line, or a .json file of token ids ({JSON_SHAPE}).")
    tokenizer = model_tokenizer(tokenizer_dir)
    rows = [list(tokenizer(line)["input_ids"]) for line in lines] if tokenizer is not None else None
    return DataFile(shown, rows, lines)


def model_tokenizer(folder: str | None):
    """The tokenizer saved in a model folder; None when `folder` is not a folder or has no tokenizer files."""
    if not folder or not Path(folder).is_dir() or not any((Path(folder) / f).exists() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


__all__ = ["DataFile", "JSON_SHAPE", "model_tokenizer", "read_data_file"]
