"""Prompt-based fine-tuning (notebook 09): the pattern, the mask position and the verbalizer's scores."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.answers import verbalizer_logits
from course_lib.lab.finetuning import CoherenceData, FinetuneRecipe
from course_lib.lab.asking.prompting import (
    Prompt, PromptClassifier, encode_prompts, finetune_prompt, make_prompt_classifier, prompt_accuracy, prompt_full,
    prompt_loss,
)

from tiny_checkpoints import save_tiny_checkpoints

QUICK = FinetuneRecipe(epochs=1, min_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def data():
    return CoherenceData.build(n_stories=6000)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def test_the_pattern_follows_the_story_with_one_mask(data, checkpoints):
    prompt = Prompt(pattern=(".", "[MASK]", "."), verbalizer=("no", "yes"))
    model, tokenizer = make_prompt_classifier(prompt, directory=checkpoints)
    examples = data.test[:5]
    ids, mask, positions, labels = encode_prompts(examples, tokenizer, prompt)
    assert (ids[torch.arange(5), positions] == tokenizer.mask_id).all()
    assert ((ids == tokenizer.mask_id).sum(dim=1) == 1).all()
    first = tokenizer.convert_ids_to_tokens(ids[0][mask[0]])
    assert first == ["[CLS]", *examples[0].tokens, ".", "[MASK]", ".", "[SEP]"]
    assert labels.tolist() == [e.label for e in examples]
    assert tokenizer.convert_ids_to_tokens(model.verbalizer_ids) == ["no", "yes"]


def test_class_scores_are_the_label_words_logits_at_the_mask(data, checkpoints):
    model, tokenizer = make_prompt_classifier(directory=checkpoints)
    ids, mask, positions, labels = encode_prompts(data.test[:6], tokenizer)
    with torch.no_grad():
        scores = model.eval()(ids, mask, positions)
        mlm_logits = model.bert(ids, mask)
    torch.testing.assert_close(scores, verbalizer_logits(mlm_logits, positions, model.verbalizer_ids))
    torch.testing.assert_close(prompt_loss(model, (ids, mask, positions, labels)), F.cross_entropy(scores, labels))
    expected = (scores.argmax(dim=1) == labels).float().mean().item()
    assert prompt_accuracy(model, tokenizer, data.test[:6], batch_size=4) == pytest.approx(expected)
    with pytest.raises(TypeError, match="bert must be"):
        PromptClassifier(model, model.verbalizer_ids)


def test_a_prompt_has_one_mask_and_two_label_words():
    with pytest.raises(ValueError, match="exactly once"):
        Prompt(pattern=("[MASK]", "[MASK]"))
    with pytest.raises(ValueError, match="two different words"):
        Prompt(verbalizer=("yes", "yes"))


def test_prompt_finetuning_is_deterministic(data, checkpoints):
    labeled = data.labeled_set(16)
    first = finetune_prompt(labeled, data.test[:30], recipe=QUICK, seed=1, directory=checkpoints)
    second = finetune_prompt(labeled, data.test[:30], recipe=QUICK, seed=1, directory=checkpoints)
    assert first.history.train_loss == second.history.train_loss
    assert first.test_accuracy == second.test_accuracy
    assert len(first.history.steps) == 3
    assert 0 <= prompt_full(16, data, recipe=QUICK, directory=checkpoints) <= 1
