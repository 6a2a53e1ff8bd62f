"""The shipped checkpoints load strictly into today's classes and still reach their recorded metrics."""
import pytest
import torch

from course_lib.hub import CHECKPOINT_DIR, load_pretrained, save_pretrained
from course_lib.lab.pretraining import evaluate_pretrained
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


@pytest.mark.slow
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


def test_bert_checkpoint_stores_its_tied_embedding_once_and_loads_it_tied():
    state = torch.load(CHECKPOINT_DIR / "tiny-bert" / "model.pt", weights_only=True)
    assert "mlm_head.token_embedding.weight" not in state and "body.token_embedding.weight" in state
    bert = load_pretrained("tiny-bert").model
    assert bert.mlm_head.token_embedding.weight is bert.body.token_embedding.weight


@pytest.mark.parametrize("name", NAMES)
def test_logits_are_bit_identical_to_the_old_format(name):
    """The old format was ``model.state_dict()`` as is: BERT's tied embedding under both its names."""
    pretrained = load_pretrained(name)
    old_format = torch.load(CHECKPOINT_DIR / name / "model.pt", weights_only=True)
    if name == "tiny-bert":
        old_format["mlm_head.token_embedding.weight"] = old_format["body.token_embedding.weight"]
    old = type(pretrained.model)(pretrained.config).eval()
    old.load_state_dict(old_format, strict=True)
    ids = torch.randint(5, pretrained.config.vocab_size, (8, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[3, 12:] = False
    with torch.no_grad():
        assert torch.equal(pretrained.model(ids, mask), old(ids, mask))


def test_bert_load_is_strict_about_every_other_name(tmp_path):
    tokenizer = Tokenizer.for_story_world()
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=16, d_model=16, n_heads=2, n_layers=1,
                               d_ff=32)
    bert = BERT(config)
    save_pretrained("tiny-bert", bert, tokenizer, {"masked_accuracy": 0.5}, directory=tmp_path)
    loaded = load_pretrained("tiny-bert", directory=tmp_path).model
    assert loaded.mlm_head.token_embedding.weight is loaded.body.token_embedding.weight
    torch.testing.assert_close(loaded.body.token_embedding.weight, bert.body.token_embedding.weight, rtol=0, atol=0)
    path = tmp_path / "tiny-bert" / "model.pt"
    state = torch.load(path, weights_only=True)
    del state["mlm_head.bias"]
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="Missing key.*mlm_head.bias"):
        load_pretrained("tiny-bert", directory=tmp_path)
    del state["body.token_embedding.weight"]  # the tied name cannot stand in for a missing embedding
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="Missing key.*body.token_embedding.weight"):
        load_pretrained("tiny-bert", directory=tmp_path)


def test_hub_only_saves_and_loads():
    import course_lib.hub as hub

    assert not hasattr(hub, "pretrain") and not hasattr(hub, "evaluate_pretrained")
