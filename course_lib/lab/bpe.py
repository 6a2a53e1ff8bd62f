"""Byte-pair encoding, trained live: how real models cut text into subword tokens (notebook 07).

The story world has one token per word, 93 in all. Real text has no such
list: new words, names, typos and other languages keep coming. Byte-pair
encoding (Sennrich et al., 2016, after a compression method of 1994) learns
a vocabulary of pieces instead:

1. split the text into words and each word into characters, with a marker
   for the end of the word (so that "er" at the end of "lower" and "er" in
   "very" can become different tokens);
2. count every pair of adjacent symbols, weighted by how often the word
   occurs;
3. merge the most frequent pair into one new symbol, everywhere;
4. repeat until the vocabulary has the size wanted.

Frequent words end up as one token, rare words as a few pieces, and a word
never seen as characters at worst. Here the base is the characters of the
training text; GPT-2 runs the same algorithm on bytes, so that its 256 base
symbols cover every language and emoji and nothing is ever out of
vocabulary. BERT's WordPiece chooses its merges by a likelihood score
instead of a count.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

END_OF_WORD = "</w>"
WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")  # runs of letters, runs of digits, single other characters


def words_of(text: str) -> list[str]:
    """The words and punctuation of ``text``, lower-cased: BPE never merges across them."""
    return WORD.findall(text.lower())


def notebook_prose(paths: Sequence[str | Path]) -> str:
    """The markdown of the notebooks at ``paths``, in the order given: English text the course ships."""
    paths = [Path(path) for path in paths]
    if not paths or any(path.suffix != ".ipynb" for path in paths):
        raise ValueError(f"paths must be a non-empty list of notebooks (*.ipynb), got {[str(p) for p in paths]}")
    cells = [json.loads(path.read_text(encoding="utf-8"))["cells"] for path in paths]
    return "\n\n".join("".join(cell["source"]) for notebook in cells for cell in notebook
                       if cell["cell_type"] == "markdown")


@dataclass
class BytePairEncoder:
    """The merges learned by ``train_bpe``, in order, and what training saw along the way.

    merges: the pairs merged, first to last; the vocabulary is the base
        characters plus one new symbol per merge.
    tokens_per_word: after 0, 1, ..., len(merges) merges, the average number
        of tokens a word of the training text was cut into.
    """

    base: list[str]
    merges: list[tuple[str, str]]
    tokens_per_word: list[float] = field(default_factory=list)

    @property
    def vocabulary(self) -> list[str]:
        return self.base + [left + right for left, right in self.merges]

    def encode_word(self, word: str) -> list[str]:
        """One word's tokens: its characters, then the merges applied in the order they were learned."""
        rank = {pair: index for index, pair in enumerate(self.merges)}
        symbols = list(word) + [END_OF_WORD]
        while len(symbols) > 1:
            pairs = [(rank.get(pair, len(rank)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
            best_rank, i = min(pairs)
            if best_rank == len(rank):  # no pair left that training merged
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        return symbols

    def encode(self, text: str) -> list[str]:
        """The tokens of ``text``: every word encoded on its own."""
        return [token for word in words_of(text) for token in self.encode_word(word)]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """``symbols`` with every occurrence of ``pair`` (left to right, not overlapping) made one symbol."""
    merged, i = [], 0
    while i < len(symbols):
        if symbols[i:i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def train_bpe(text: str, n_merges: int) -> BytePairEncoder:
    """Learn ``n_merges`` merges from ``text`` (fewer if every word becomes a single token first).

    Deterministic: of two pairs equally frequent, the one met first in the
    text is merged first.
    """
    if not isinstance(n_merges, int) or isinstance(n_merges, bool) or n_merges < 0:
        raise ValueError(f"n_merges must be a non-negative int, got {n_merges!r}")
    word_counts = Counter(words_of(text))
    if not word_counts:
        raise ValueError("text holds no words to learn from")
    # Each distinct word once, as a tuple of symbols, with how often it occurs.
    segmented = {tuple(word) + (END_OF_WORD,): count for word, count in word_counts.items()}
    base = sorted({symbol for symbols in segmented for symbol in symbols})
    n_words = sum(word_counts.values())

    def tokens_per_word() -> float:
        return sum(len(symbols) * count for symbols, count in segmented.items()) / n_words

    encoder = BytePairEncoder(base, [], [tokens_per_word()])
    for _ in range(n_merges):
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in segmented.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        (best, _), = pair_counts.most_common(1)
        segmented = {_merge(symbols, best): count for symbols, count in segmented.items()}
        encoder.merges.append(best)
        encoder.tokens_per_word.append(tokens_per_word())
    return encoder
