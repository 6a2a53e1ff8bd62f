"""The pretraining recipes and metrics shared by notebooks 05-06, `course pretrain` and `course bench`."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.corpus import PRONOUN
from course_lib.models import BERT, GPT
from course_lib.hub import load_pretrained
from course_lib.lab.pretraining import (
    CHECKPOINT_STEPS, NOTEBOOK_STEPS, PEAK_LR, StoryData, bert_fill_accuracy, bert_loss_fn, bert_masked_accuracy,
    checkpoint_train_config, family_train_config, gpt_loss, gpt_validation_loss, model_config,
    notebook_train_config, positions_of_kind, pretrain, pretrain_gpt, valid_story_rate,
)


@pytest.fixture(scope="module")
def gpt_data():
    return StoryData.build("gpt", n_stories=3000)


@pytest.fixture(scope="module")
def bert_data():
    return StoryData.build("bert", n_stories=3000)


def test_each_family_has_its_own_learning_rate_and_steps():
    bert, gpt = notebook_train_config("bert"), notebook_train_config("gpt")
    assert (bert.lr, gpt.lr) == (PEAK_LR["bert"], PEAK_LR["gpt"]) and bert.lr < gpt.lr
    assert (bert.steps, gpt.steps) == (NOTEBOOK_STEPS["bert"], NOTEBOOK_STEPS["gpt"])
    # GPT's longer live run takes smaller batches, so that it fits the time cap on one core.
    assert (bert.batch_size, gpt.batch_size) == (64, 48)
    for family in ("bert", "gpt"):
        config = checkpoint_train_config(family)
        assert config.steps == CHECKPOINT_STEPS
        assert 0 < config.warmup_steps <= config.steps // 10
    assert family_train_config("gpt", 20).warmup_steps == 2  # never more than a tenth of a short run
    with pytest.raises(ValueError, match="family must be one of .*'t5'"):
        notebook_train_config("t5")


def test_batches_hold_stories_of_similar_length_cut_to_the_longest(gpt_data):
    batches = gpt_data.batches(16, seed=3)
    all_lengths = gpt_data.mask["train"].sum(dim=1).float()
    for _ in range(10):
        ids, mask = next(batches)
        assert ids.shape == mask.shape and ids.shape[0] == 16
        lengths = mask.sum(dim=1)
        assert int(lengths.max()) == ids.shape[1]  # no column of padding only
        assert lengths.float().std() < all_lengths.std()  # sorted pools: similar lengths side by side
    first, again = next(gpt_data.batches(16, seed=3)), next(gpt_data.batches(16, seed=3))
    assert torch.equal(first[0], again[0])
    with pytest.raises(ValueError, match="batch_size \\* pool"):
        next(gpt_data.batches(1000, pool=16))


def test_gpt_validation_loss_averages_over_predicted_tokens_only(gpt_data):
    torch.manual_seed(0)
    model = GPT(model_config(gpt_data.tokenizer, n_layers=1)).eval()
    ids, mask = gpt_data.ids["validation"][:7], gpt_data.mask["validation"][:7]
    total, count = 0.0, 0
    for row in range(7):
        story = ids[row, :int(mask[row].sum())]  # [BOS] w1 ... wn [EOS], no padding
        logits = model(story[None, :-1])[0]
        total += F.cross_entropy(logits, story[1:], reduction="sum").item()
        count += len(story) - 1
    assert gpt_validation_loss(model, gpt_data, limit=7, batch_size=3) == pytest.approx(total / count, rel=1e-5)
    assert gpt_loss(model, (ids, mask)).item() == pytest.approx(total / count, rel=1e-4)


@pytest.mark.slow
def test_a_short_gpt_run_learns_and_an_untrained_gpt_writes_no_valid_story(gpt_data):
    torch.manual_seed(0)
    untrained = GPT(model_config(gpt_data.tokenizer, n_layers=1))
    assert valid_story_rate(untrained, gpt_data.tokenizer, n=20) == 0.0
    model, history = pretrain_gpt(gpt_data, family_train_config("gpt", 60), progress=False, device="cpu")
    assert history.train_loss[-1] < history.train_loss[0] / 2
    assert history.last("val_loss") < 2.0 < history.train_loss[0]
    assert not model.training  # returned ready to use, like a loaded checkpoint


def test_measurements_leave_the_model_in_its_mode(bert_data):
    torch.manual_seed(0)
    model = BERT(model_config(bert_data.tokenizer, n_layers=1, dropout=0.1)).train()
    first = bert_masked_accuracy(model, bert_data, limit=50)
    assert model.training
    assert bert_masked_accuracy(model.eval(), bert_data, limit=50) == first  # measured in eval mode both times
    loss = bert_loss_fn(bert_data.tokenizer, seed=0, device="cpu")
    assert loss(model, next(bert_data.batches(8))).item() > 0
    with pytest.raises(ValueError, match="^device must be a device name"):
        bert_loss_fn(bert_data.tokenizer, device="gpu")


def test_pretrain_names_a_shipped_checkpoint():
    with pytest.raises(ValueError, match=r"^name must be one of \['tiny-bert', 'tiny-gpt'\], got 'gpt-5'"):
        pretrain("gpt-5")


@pytest.mark.slow
def test_pretrain_trains_measures_and_saves_a_checkpoint(tmp_path):
    pretrained = pretrain("tiny-gpt", steps=3, progress=False, directory=tmp_path, device="cpu")
    assert set(pretrained.metrics) == {"val_loss", "entropy_floor", "loss_over_floor", "valid_story_rate",
                                       "train_seconds"}
    assert load_pretrained("tiny-gpt", directory=tmp_path).metrics == pretrained.metrics


def test_positions_of_kind_skip_the_opening_special_token(bert_data):
    stories = bert_data.stories["validation"][:50]
    positions = positions_of_kind(stories, PRONOUN)
    assert positions and all(stories[row].kinds[column - 1] == PRONOUN for row, column in positions)
    tokens = bert_data.tokenizer.convert_ids_to_tokens([int(bert_data.ids["validation"][r, c]) for r, c in positions])
    assert set(tokens) <= {"he", "she", "his", "her"}


class _AlwaysSays(torch.nn.Module):
    """A stand-in BERT that predicts the same word at every position."""

    def __init__(self, token_id: int, vocab_size: int):
        super().__init__()
        self.token_id, self.vocab_size = token_id, vocab_size

    def forward(self, ids, mask):
        return F.one_hot(torch.full_like(ids, self.token_id), self.vocab_size).float()


def test_fill_accuracy_scores_the_hidden_word(bert_data):
    tokenizer = bert_data.tokenizer
    positions = positions_of_kind(bert_data.stories["validation"][:200], PRONOUN)
    answers = [int(bert_data.ids["validation"][row, column]) for row, column in positions]
    she = tokenizer.encode(["she"])[0]
    expected = answers.count(she) / len(answers)
    assert 0 < expected < 1
    assert bert_fill_accuracy(_AlwaysSays(she, tokenizer.vocab_size), bert_data, positions, batch_size=7) == \
        pytest.approx(expected)
