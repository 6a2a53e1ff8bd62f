"""A word-level tokenizer: text to token ids and back.

A model never sees words, only integers. This tokenizer gives every word of
the story world an id, adds a few special tokens that the models use as
signals, and maps any word it has never seen to ``[UNK]``:

=========  ==================================================================
``[PAD]``  fills short sequences up to the batch length; attention ignores it
``[UNK]``  stands for any word outside the vocabulary
``[CLS]``  starts a BERT input; its final vector summarises the sequence
``[SEP]``  ends a BERT input (and separates two segments)
``[MASK]`` hides a word BERT must fill in
``[BOS]``  starts a GPT input: "begin of sequence"
``[EOS]``  ends a story: GPT predicts it to say "the story is over"
=========  ==================================================================

Real models split text into sub-words so that no word is ever unknown; the
story world has under a hundred words, so whole words are enough here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

PAD, UNK, CLS, SEP, MASK, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, BOS, EOS)

# Which special tokens wrap a sequence, for each family of model.
STYLES = {"plain": ((), ()), "gpt": ((BOS,), (EOS,)), "bert": ((CLS,), (SEP,))}

# A special token, a word, or a single punctuation mark.
_TOKEN_PATTERN = re.compile(r"\[[A-Z]+\]|\w+|[^\w\s]")


@dataclass
class Batch:
    """Token ids of several texts padded to one length, and which ids are real.

    input_ids:       (B, T) int64, ``[PAD]`` after the end of each text
    attention_mask:  (B, T) bool, True for a real token, False for padding
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class Tokenizer:
    """Maps words to ids and back; ids 0-6 are the special tokens, in ``SPECIAL_TOKENS`` order."""

    def __init__(self, words: Iterable[str]):
        words = list(words)
        for word in words:
            if not isinstance(word, str) or not _TOKEN_PATTERN.fullmatch(word):
                raise ValueError(f"words must be single tokens (a word or one punctuation mark), got {word!r}")
        ordinary = sorted(set(words) - set(SPECIAL_TOKENS))
        self.id_to_token: list[str] = list(SPECIAL_TOKENS) + ordinary
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(self.id_to_token)}

    @classmethod
    def for_story_world(cls, world=None) -> "Tokenizer":
        """The tokenizer of the story world's English (the default world unless one is given)."""
        from course_lib.corpus import default_world

        return cls((world or default_world()).vocabulary)

    # -- ids of the special tokens ------------------------------------------------------------

    pad_id = property(lambda self: self.token_to_id[PAD])
    unk_id = property(lambda self: self.token_to_id[UNK])
    cls_id = property(lambda self: self.token_to_id[CLS])
    sep_id = property(lambda self: self.token_to_id[SEP])
    mask_id = property(lambda self: self.token_to_id[MASK])
    bos_id = property(lambda self: self.token_to_id[BOS])
    eos_id = property(lambda self: self.token_to_id[EOS])

    @property
    def special_ids(self) -> list[int]:
        return [self.token_to_id[token] for token in SPECIAL_TOKENS]

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    # -- text to ids -------------------------------------------------------------------------

    @staticmethod
    def split(text: str) -> list[str]:
        """Lower-cased words and punctuation marks; special tokens such as ``[MASK]`` stay whole."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [t if t in SPECIAL_TOKENS else t.lower() for t in _TOKEN_PATTERN.findall(text)]

    def encode(self, text: str | Sequence[str], style: str = "plain", max_len: int | None = None) -> list[int]:
        """Ids of ``text`` (a string, or a list of tokens already split).

        ``style`` adds the special tokens of a model family: ``"gpt"`` wraps
        in ``[BOS] ... [EOS]``, ``"bert"`` in ``[CLS] ... [SEP]``. Unknown
        words become ``[UNK]``. A result longer than ``max_len`` is an error,
        never silently cut: a cut story would teach a model wrong endings.
        """
        if style not in STYLES:
            raise ValueError(f"style must be one of {sorted(STYLES)}, got {style!r}")
        tokens = self.split(text) if isinstance(text, str) else list(text)
        before, after = STYLES[style]
        ids = [self.token_to_id.get(token, self.unk_id) for token in (*before, *tokens, *after)]
        if max_len is not None and len(ids) > max_len:
            raise ValueError(f"text is {len(ids)} tokens long with its special tokens, more than max_len={max_len}: "
                             f"{' '.join(tokens[:8])} ...")
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, tokens joined by single spaces (special tokens dropped by default)."""
        return " ".join(self.convert_ids_to_tokens(ids, skip_special_tokens))

    def convert_ids_to_tokens(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> list[str]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be one sequence (1-D), got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"id {i} is outside the vocabulary (0 to {self.vocab_size - 1})")
            token = self.id_to_token[int(i)]
            if not (skip_special_tokens and token in SPECIAL_TOKENS):
                tokens.append(token)
        return tokens

    def encode_batch(self, texts: Sequence[str | Sequence[str]], style: str = "plain",
                     max_len: int | None = None) -> Batch:
        """Encode several texts and pad them with ``[PAD]`` to the longest one."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("texts must be a non-empty list of texts (got "
                             f"{'a single string' if isinstance(texts, str) else 'an empty list'})")
        encoded = [self.encode(text, style, max_len) for text in texts]
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.bool)
        for row, ids in enumerate(encoded):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = True
        return Batch(input_ids, attention_mask)

    # -- saving with a checkpoint -----------------------------------------------------------

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.id_to_token, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        id_to_token = json.loads(Path(path).read_text())
        if list(id_to_token[:len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ValueError(f"{path} does not start with the special tokens {SPECIAL_TOKENS}")
        tokenizer = cls(id_to_token[len(SPECIAL_TOKENS):])
        if tokenizer.id_to_token != id_to_token:
            raise ValueError(f"{path} is not a sorted vocabulary written by Tokenizer.save")
        return tokenizer
