"""Byte-pair encoding (notebook 07): the merges, the encoder that replays them, the course's prose."""
from pathlib import Path

import pytest

from course_lib.lab.bpe import END_OF_WORD, BytePairEncoder, notebook_prose, train_bpe, words_of

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_words_are_lower_case_letters_digits_and_single_marks():
    assert words_of("GPT-2 reads 1,024 tokens.") == ["gpt", "-", "2", "reads", "1", ",", "024", "tokens", "."]


def test_the_most_frequent_pair_is_merged_first_and_counts_are_weighted_by_words():
    # "lo" occurs in all 7 words, "ow" in 7, "we" in 2 + 3; "lo" comes first in the text.
    text = "low " * 2 + "lower " * 2 + "lowest " * 3
    encoder = train_bpe(text, 3)
    assert encoder.merges == [("l", "o"), ("lo", "w"), ("low", "e")]
    assert encoder.encode_word("lowest") == ["lowe", "s", "t", END_OF_WORD]
    assert encoder.encode_word("low") == ["low", END_OF_WORD]
    assert encoder.vocabulary[-3:] == ["lo", "low", "lowe"]


def test_tokens_per_word_fall_by_the_count_of_each_merged_pair():
    text = "low " * 2 + "lower " * 2 + "lowest " * 3
    encoder = train_bpe(text, 3)
    # 7 words: 2 x 4 + 2 x 6 + 3 x 7 = 41 symbols, then each merge removes one symbol per word that has the pair.
    assert encoder.tokens_per_word == pytest.approx([41 / 7, 34 / 7, 27 / 7, 22 / 7])


def test_encoding_replays_training_on_every_training_word():
    prose = notebook_prose(NOTEBOOKS)[:20_000]
    encoder = train_bpe(prose, 120)
    words = words_of(prose)
    encoded = [encoder.encode_word(word) for word in words]
    assert all("".join(tokens) == word + END_OF_WORD for tokens, word in zip(encoded, words))
    # What training counted is what the encoder produces.
    assert sum(map(len, encoded)) / len(words) == pytest.approx(encoder.tokens_per_word[-1])
    assert encoder.tokens_per_word == sorted(encoder.tokens_per_word, reverse=True)
    unseen = "unpretrainable"  # no such word in the prose, but its letters are
    assert unseen not in words and set(encoder.encode_word(unseen)) <= set(encoder.vocabulary)


def test_training_stops_when_every_word_is_one_token():
    encoder = train_bpe("ab ab", 10)
    assert encoder.merges == [("a", "b"), ("ab", END_OF_WORD)]
    assert encoder.tokens_per_word[-1] == 1


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="n_merges must be a non-negative int"):
        train_bpe("some text", -1)
    with pytest.raises(ValueError, match="no words"):
        train_bpe("   ", 5)
    with pytest.raises(ValueError, match="non-empty list of notebooks"):
        notebook_prose([])
    with pytest.raises(ValueError, match="non-empty list of notebooks"):
        notebook_prose([tmp_path / "notes.txt"])
    assert isinstance(train_bpe("x", 0), BytePairEncoder)


def test_notebook_prose_is_the_markdown_and_not_the_code():
    seventh = [path for path in NOTEBOOKS if path.name.startswith("07_")]
    prose = notebook_prose(seventh)
    assert "## 5. What changes on real text" in prose
    assert "import torch" not in prose
