"""The shipped checkpoints load strictly into today's classes and still reach their recorded metrics."""
import pytest
import torch

from course_lib.hub import CHECKPOINT_DIR, load_pretrained, evaluate_pretrained, save_pretrained
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.tokenizer import Tokenizer

NAMES = ["tiny-bert", "tiny-gpt"]
# What notebooks 05-08 rely on: BERT agrees pronouns with their person, GPT is
# close to the entropy floor and writes stories the grammar accepts.
GOALS = {"tiny-bert": {"pronoun_accuracy": 0.98, "masked_accuracy": 0.85},
         "tiny-gpt": {"valid_story_rate": 0.95}}


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_is_small_and_loads_strictly(name):
    folder = CHECKPOINT_DIR / name
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 5 * 2**20
    pretrained = load_pretrained(name)
    assert isinstance(pretrained.model, {"tiny-bert": BERT, "tiny-gpt": GPT}[name])
    assert not pretrained.model.training
    assert pretrained.tokenizer.vocab_size == pretrained.config.vocab_size
    assert pretrained.tokenizer.id_to_token == Tokenizer.for_story_world().id_to_token


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_still_reaches_its_recorded_metrics(name):
    pretrained = load_pretrained(name)
    measured = evaluate_pretrained(pretrained)
    for metric, value in measured.items():
        tolerance = 0.03 if metric == "valid_story_rate" else 0.005
        assert value == pytest.approx(pretrained.metrics[metric], abs=tolerance), metric


@pytest.mark.parametrize("name", NAMES)
def test_recorded_metrics_meet_the_course_goals(name):
    metrics = load_pretrained(name).metrics
    for metric, at_least in GOALS[name].items():
        assert metrics[metric] >= at_least, metric
    if name == "tiny-gpt":
        assert metrics["loss_over_floor"] <= 1.05


def test_load_is_strict(tmp_path):
    config = TransformerConfig(vocab_size=Tokenizer.for_story_world().vocab_size, max_len=16, d_model=16,
                               n_heads=2, n_layers=1, d_ff=32)
    gpt = GPT(config)
    save_pretrained("tiny-gpt", gpt, Tokenizer.for_story_world(), {"val_loss": 1.0}, directory=tmp_path)
    loaded = load_pretrained("tiny-gpt", directory=tmp_path)
    torch.testing.assert_close(loaded.model.lm_head.weight, gpt.lm_head.weight)
    state = torch.load(tmp_path / "tiny-gpt" / "model.pt")
    state["body.extra_layer.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "tiny-gpt" / "model.pt")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_pretrained("tiny-gpt", directory=tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("gpt-5")
    with pytest.raises(FileNotFoundError, match="course pretrain"):
        load_pretrained("tiny-bert", directory=tmp_path)
