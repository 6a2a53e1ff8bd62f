"""Word vectors learned from co-occurrence counts: the queries and keys of notebook 01.

Before any network is trained, the stories already tell us which words play
similar roles: "park" and "beach" keep the same company ("the park to",
"the beach to"). Four steps turn that company into vectors:

1. **count** how often each word appears next to each other word
   (``cooccurrence_counts``);
2. **PMI**, pointwise mutual information, says how many times more often
   two words meet than if words were scattered at random,
   ``PMI(a, b) = log p(a, b) / (p(a) p(b))``; negative values are mostly
   noise from rare pairs, so we keep the positive part (``positive_pmi``);
3. a **truncated SVD** compresses each word's row of that matrix (one entry
   per vocabulary word) into ``dim`` numbers, keeping the directions along
   which the rows differ most (``svd_word_vectors``);
4. **centre and normalise**: remove the direction every word shares and give
   every vector the same length, so that two vectors are close when they
   point the same way, not because a word is frequent.

The window decides what "similar" means: the immediate neighbours
(``window=1``) reveal a word's *role* (places with places), a wider window
its *topic* (the library with history).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from course_lib.utils import check_positive_int

__all__ = ["cooccurrence_counts", "positive_pmi", "svd_word_vectors", "WordVectors", "word_vectors"]


def cooccurrence_counts(sequences: Iterable[Sequence[str]], vocabulary: Sequence[str],
                        window: int = 1) -> torch.Tensor:
    """How often each word appears within ``window`` positions of each other word.

    Args:
        sequences: token sequences (for example ``story.tokens``); a window
            never reaches from one sequence into the next.
        vocabulary: the V words to count; a token outside it is an error.
        window: how many neighbours on each side count as "together".

    Returns:
        (V, V) float64 tensor, symmetric: ``counts[a, b]`` is the number of
        times word b was within ``window`` positions of word a.
    """
    check_positive_int("window", window)
    index = {word: i for i, word in enumerate(vocabulary)}
    if len(index) != len(vocabulary):
        raise ValueError("vocabulary must not repeat a word")
    left, right = [], []
    for sequence in sequences:
        if isinstance(sequence, str):
            raise TypeError("sequences must hold token sequences (lists of words), got a str; "
                            "pass text.split() or story.tokens")
        try:
            ids = [index[token] for token in sequence]
        except KeyError as error:
            raise ValueError(f"sequences hold the token {error.args[0]!r}, which is not in vocabulary") from None
        for offset in range(1, window + 1):
            left += ids[:-offset]
            right += ids[offset:]
    V = len(vocabulary)
    # One bincount over flattened (a, b) pairs instead of V*V Python additions.
    pairs = torch.tensor(left, dtype=torch.long) * V + torch.tensor(right, dtype=torch.long)
    counts = torch.bincount(pairs, minlength=V * V).reshape(V, V).double()
    return counts + counts.T  # "b after a" and "a after b" are both "together"


def positive_pmi(counts: torch.Tensor) -> torch.Tensor:
    """Positive pointwise mutual information of a co-occurrence matrix.

        PPMI(a, b) = max(0, log( p(a, b) / (p(a) p(b)) ))

    with p(a, b) = counts[a, b] / total and p(a), p(b) the row and column
    shares. A pair never seen together gets 0.

    Args:
        counts: (V, V) non-negative counts, as ``cooccurrence_counts`` returns.

    Returns:
        (V, V) float64 tensor.
    """
    if not isinstance(counts, torch.Tensor):
        raise TypeError(f"counts must be a torch.Tensor, got {type(counts).__name__}")
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be a square (V, V) matrix, got shape {tuple(counts.shape)}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be non-negative with at least one positive entry")
    counts = counts.double()
    total = counts.sum()
    p_pair = counts / total
    p_row = counts.sum(dim=1, keepdim=True) / total  # (V, 1)
    p_col = counts.sum(dim=0, keepdim=True) / total  # (1, V)
    pmi = torch.log(p_pair / (p_row * p_col))  # log 0 = -inf for pairs never seen
    # clamp turns -inf into 0; nan_to_num handles a word that was never seen at all (0/0).
    return pmi.clamp(min=0).nan_to_num(0.0)


def svd_word_vectors(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """Compress each row of ``matrix`` into ``dim`` numbers by a truncated SVD.

    ``matrix = U S V^T``; the word vectors are the first ``dim`` columns of
    ``U sqrt(S)``, centred (the mean vector subtracted) and rescaled so that
    every vector has length sqrt(dim): its entries then have mean square 1,
    like the unit-variance vectors of the sqrt(d_k) experiment.

    The SVD runs in float64 so that the vectors, and every number computed
    from them, are the same on each run; the result is float32, PyTorch's
    default. An SVD fixes each column only up to its sign, so each column is
    flipped to make its largest entry positive.

    Args:
        matrix: (V, V) float tensor, for example ``positive_pmi(counts)``.
        dim: size of the vectors, at most V.

    Returns:
        (V, dim) float32 tensor, every row of length sqrt(dim).
    """
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        raise ValueError(f"matrix must be a 2-D torch.Tensor (V, V), got {_describe(matrix)}")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= min(matrix.shape):
        raise ValueError(f"dim must be an int from 1 to {min(matrix.shape)} (the matrix has shape "
                         f"{tuple(matrix.shape)}), got {dim!r}")
    U, S, _ = torch.linalg.svd(matrix.double(), full_matrices=False)
    U = U[:, :dim]
    largest = U.gather(0, U.abs().argmax(dim=0, keepdim=True))  # (1, dim): each column's largest entry
    vectors = U * largest.sign() * S[:dim].sqrt()  # (V, dim)
    vectors = vectors - vectors.mean(dim=0)  # the direction every word shares says nothing about any
    norms = vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (vectors / norms * math.sqrt(dim)).float()


@dataclass
class WordVectors:
    """A vector for every word of a vocabulary.

    vocabulary: the V words, in the order of the rows of ``vectors``.
    vectors:    (V, dim) float tensor.

    ``wv["park"]`` is one vector (dim,); ``wv(tokens)`` stacks the vectors of
    a sequence into (T, dim), the keys (and values) of its attention.
    """

    vocabulary: list[str]
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() != 2:
            raise ValueError(f"vectors must be a (V, dim) tensor, got {_describe(self.vectors)}")
        if self.vectors.shape[0] != len(self.vocabulary):
            raise ValueError(f"vectors has {self.vectors.shape[0]} rows but vocabulary has "
                             f"{len(self.vocabulary)} words; expected one row per word")
        self.vocabulary = list(self.vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __getitem__(self, word: str) -> torch.Tensor:
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the vocabulary of these word vectors")
        return self.vectors[self.index[word]]

    def __call__(self, tokens: Sequence[str]) -> torch.Tensor:
        """The vectors of ``tokens``, stacked: (T, dim)."""
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of words, got a str; pass text.split()")
        return torch.stack([self[token] for token in tokens])

    def average(self, words: Iterable[str]) -> torch.Tensor:
        """The direction shared by ``words``: their mean vector, rescaled to length sqrt(dim). Shape (dim,)."""
        words = list(words)
        if not words:
            raise ValueError("words must not be empty")
        mean = self(words).mean(dim=0)
        return mean / mean.norm().clamp(min=1e-12) * math.sqrt(self.dim)

    def nearest(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` other words whose vectors point most nearly the same way, with their cosine."""
        cosines = torch.nn.functional.cosine_similarity(self.vectors, self[word][None, :], dim=1)
        order = cosines.argsort(descending=True, stable=True).tolist()
        return [(self.vocabulary[i], round(cosines[i].item(), 2)) for i in order if i != self.index[word]][:k]


def word_vectors(sequences: Iterable[Sequence[str]], vocabulary: Sequence[str], window: int = 1,
                 dim: int = 32) -> WordVectors:
    """Counts, positive PMI and truncated SVD in one call; see the module docstring."""
    counts = cooccurrence_counts(sequences, vocabulary, window)
    return WordVectors(list(vocabulary), svd_word_vectors(positive_pmi(counts), dim))


def _describe(x) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
