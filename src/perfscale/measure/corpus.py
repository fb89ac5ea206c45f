"""The shipped sentence corpus: real English sentences with a natural length distribution.

See src/perfscale/data/corpus/README.md for where the sentences come from.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def _all_sentences() -> tuple[str, ...]:
    text = resources.files("perfscale.data").joinpath("corpus/sentences.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_sentences(n: int | None = None) -> list[str]:
    """The first `n` sentences (all when None), in the file's fixed (seeded-shuffle) order.

    When n exceeds the corpus size the sentences repeat, so any batch size can be filled.
    """
    sentences = _all_sentences()
    if n is None:
        return list(sentences)
    if n < 0:
        from perfscale.errors import InvalidConfigError

        raise InvalidConfigError(f"Number of sentences must be >= 0, got {n}.")
    return [sentences[i % len(sentences)] for i in range(n)]


__all__ = ["load_sentences"]
