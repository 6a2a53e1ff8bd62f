"""The word-level tokenizer: ids, special tokens, batches, errors."""
import pytest
import torch

from course_lib.corpus import generate_stories
from course_lib.tokenizer import SPECIAL_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.for_story_world()


def test_special_tokens_come_first_in_a_fixed_order(tokenizer):
    assert tokenizer.id_to_token[:7] == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id) == tuple(range(7))


def test_round_trip_on_stories(tokenizer):
    for story in generate_stories(500, seed=2):
        ids = tokenizer.encode(story.text)
        assert tokenizer.unk_id not in ids
        assert tokenizer.decode(ids) == story.text
        assert tokenizer.encode(story.pretty()) == ids  # capitals and glued periods split the same way


def test_styles_wrap_with_the_right_special_tokens(tokenizer):
    plain = tokenizer.encode("tom was happy .")
    assert tokenizer.encode("tom was happy .", "gpt") == [tokenizer.bos_id, *plain, tokenizer.eos_id]
    assert tokenizer.encode("tom was happy .", "bert") == [tokenizer.cls_id, *plain, tokenizer.sep_id]
    assert tokenizer.decode(tokenizer.encode("tom was [MASK] .", "bert"), skip_special_tokens=False) == \
        "[CLS] tom was [MASK] . [SEP]"


def test_punctuation_is_a_token_and_unknown_words_are_unk(tokenizer):
    assert Tokenizer.split("Tom was happy, very.") == ["tom", "was", "happy", ",", "very", "."]
    ids = tokenizer.encode("Tom was ecstatic.")
    assert ids[2] == tokenizer.unk_id and ids[3] == tokenizer.token_to_id["."]


def test_batch_pads_and_masks(tokenizer):
    batch = tokenizer.encode_batch(["tom was happy .", "alice went home ."], style="gpt")
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 6)
    assert batch.attention_mask.dtype == torch.bool
    assert batch.attention_mask.sum(1).tolist() == [6, 6]
    short = tokenizer.encode_batch(["tom was happy .", "tom ."])
    assert short.input_ids[1].tolist() == [*tokenizer.encode("tom ."), tokenizer.pad_id, tokenizer.pad_id]
    assert short.attention_mask[1].tolist() == [True, True, False, False]


def test_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="max_len=5"):
        tokenizer.encode("tom went to the park to play football .", max_len=5)
    with pytest.raises(ValueError, match="style"):
        tokenizer.encode("tom", style="t5")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])
    with pytest.raises(ValueError, match="single string"):
        tokenizer.encode_batch("tom was happy .")
    with pytest.raises(TypeError, match="text must be a str"):
        Tokenizer.split(3)


def test_save_and_load(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "vocab.json")
    loaded = Tokenizer.load(tmp_path / "vocab.json")
    assert loaded.id_to_token == tokenizer.id_to_token
    (tmp_path / "bad.json").write_text('["tom", "[PAD]"]')
    with pytest.raises(ValueError, match="special tokens"):
        Tokenizer.load(tmp_path / "bad.json")
