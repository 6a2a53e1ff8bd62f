"""A class split into N parts that separate machines grade: ``course grade --shard i/N``.

A learner belongs to one shard, decided by the learner's name alone: the
SHA-256 of the folder name, read as a number, modulo N. So every machine
puts every learner in the same shard, even when its copy of the
submissions holds a learner more or less than another machine's, and the
N shards together hold each learner exactly once. Hashing does not balance
the shards exactly: with 40 learners in 3 shards, expect 13 each give or take 3.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD_TEXT = re.compile(r"^(?P<index>\d+)/(?P<count>\d+)$")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` parts of a class, counting from 1."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 1 <= self.index <= self.count:
            raise ValueError(f"a shard is i/N with 1 <= i <= N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``Shard.parse("2/3")`` is the second of three shards."""
        match = _SHARD_TEXT.match(text.strip())
        if match is None:
            raise ValueError(f"a shard is written i/N, like 2/3, got {text!r}")
        return cls(int(match["index"]), int(match["count"]))

    def holds(self, learner: str) -> bool:
        """Whether the learner whose folder is named ``learner`` is graded in this shard."""
        return shard_of(learner, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(learner: str, count: int) -> int:
    """The shard (1 to ``count``) that the learner named ``learner`` belongs to."""
    digest = hashlib.sha256(learner.encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count
