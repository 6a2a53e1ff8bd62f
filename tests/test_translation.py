"""The translation task: encoding the pairs, the teacher-forcing loss, exact match."""
import pytest
import torch

from course_lib.corpus import default_world, translate
from course_lib.models import EncoderDecoder, TransformerConfig
from course_lib.training import TrainConfig, random_batches, train
from course_lib.lab.translation import encode_pairs, exact_match, translation_loss, translation_tokenizers


@pytest.fixture(scope="module")
def tokenizers():
    return translation_tokenizers(default_world())


@pytest.fixture(scope="module")
def stories():
    return default_world().sample(200, seed=1)


def test_pairs_hold_every_story_and_its_translation(tokenizers, stories):
    source_tokenizer, target_tokenizer = tokenizers
    pairs = encode_pairs(stories, source_tokenizer, target_tokenizer)

    assert len(pairs) == 200
    assert pairs.source_ids.shape == pairs.source_mask.shape
    assert pairs.target_ids.shape == pairs.target_mask.shape
    for row, story in enumerate(stories[:20]):
        source = pairs.source_ids[row][pairs.source_mask[row]]
        target = pairs.target_ids[row][pairs.target_mask[row]]
        assert source_tokenizer.convert_ids_to_tokens(source) == list(story.tokens)
        assert target_tokenizer.convert_ids_to_tokens(target) == ["[BOS]", *translate(story), "[EOS]"]
    # Both vocabularies cover their language: no word becomes [UNK].
    assert not (pairs.source_ids == source_tokenizer.unk_id).any()
    assert not (pairs.target_ids == target_tokenizer.unk_id).any()
    # Padding only after the end.
    assert (pairs.source_ids[~pairs.source_mask] == source_tokenizer.pad_id).all()
    assert (pairs.target_mask.long().diff(dim=1) <= 0).all()


def test_encode_pairs_rejects_bad_input(tokenizers):
    with pytest.raises(ValueError, match="non-empty"):
        encode_pairs([], *tokenizers)
    with pytest.raises(TypeError, match="Story"):
        encode_pairs(["alice went home ."], *tokenizers)


def tiny_model(tokenizers, seed=0):
    source_tokenizer, target_tokenizer = tokenizers
    settings = dict(max_len=48, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0)
    torch.manual_seed(seed)
    return EncoderDecoder(TransformerConfig(vocab_size=source_tokenizer.vocab_size, **settings),
                          TransformerConfig(vocab_size=target_tokenizer.vocab_size, **settings))


def test_loss_ignores_padding_and_trains_the_model(tokenizers, stories):
    pairs = encode_pairs(stories[:8], *tokenizers)
    model = tiny_model(tokenizers).eval()
    loss = translation_loss(model, pairs.tensors())
    assert loss.dim() == 0 and torch.isfinite(loss)

    scrambled = pairs.target_ids.clone()
    scrambled[~pairs.target_mask] = 9  # any word id where there is only padding
    same = translation_loss(model, (pairs.source_ids, pairs.source_mask, scrambled, pairs.target_mask))
    torch.testing.assert_close(same, loss)

    loss.backward()
    assert model.encoder.token_embedding.weight.grad.abs().sum() > 0  # the loss reaches the encoder


class ReplayModel(torch.nn.Module):
    """Stands in for an EncoderDecoder: its greedy decoding returns fixed rows, as the real one would."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def greedy_decode(self, source_ids, bos_id, eos_id, max_len=None, source_mask=None):
        assert max_len is not None and source_mask is not None
        rows = [self.outputs.pop(0) for _ in range(len(source_ids))]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [eos_id] * (width - len(row)) for row in rows])


def test_exact_match_credits_only_whole_translations(tokenizers, stories):
    _, target_tokenizer = tokenizers
    bos, eos = target_tokenizer.bos_id, target_tokenizer.eos_id
    pairs = encode_pairs(stories[:4], *tokenizers)
    references = [pairs.target_ids[i][pairs.target_mask[i]].tolist() for i in range(4)]
    one_word_wrong = list(references[1])
    one_word_wrong[2] = target_tokenizer.token_to_id["ivit"]  # [BOS] time person ...: a verb for the person
    too_short = references[2][:-2] + [eos]
    no_end = references[3][:-1]
    outputs = [references[0], one_word_wrong, too_short, no_end]

    model = ReplayModel(outputs).train()
    assert exact_match(model, pairs, bos_id=bos, eos_id=eos, batch_size=3) == 0.25
    assert model.training  # the mode it had before is restored

    assert exact_match(ReplayModel(list(references)), pairs, bos_id=bos, eos_id=eos) == 1.0


def test_exact_match_rejects_bad_arguments(tokenizers, stories):
    pairs = encode_pairs(stories[:2], *tokenizers)
    with pytest.raises(ValueError, match="TranslationPairs"):
        exact_match(ReplayModel([]), pairs.tensors(), bos_id=5, eos_id=6)
    with pytest.raises(ValueError, match="batch_size"):
        exact_match(ReplayModel([]), pairs, bos_id=5, eos_id=6, batch_size=0)


def test_a_small_model_learns_to_translate_a_few_stories(tokenizers, stories):
    _, target_tokenizer = tokenizers
    pairs = encode_pairs(stories[:16], *tokenizers)
    model = tiny_model(tokenizers)
    config = TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup_steps=20, eval_every=150)
    train(model, random_batches(pairs.tensors(), 16, torch.Generator().manual_seed(0)), translation_loss, config,
          progress=False)

    score = exact_match(model, pairs, bos_id=target_tokenizer.bos_id, eos_id=target_tokenizer.eos_id)
    assert score == 1.0
    untrained = exact_match(tiny_model(tokenizers, seed=1), pairs, bos_id=target_tokenizer.bos_id,
                            eos_id=target_tokenizer.eos_id)
    assert untrained == 0.0
