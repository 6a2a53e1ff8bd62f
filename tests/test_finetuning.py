"""Fine-tuning (notebook 08, ``course bench``): the labeled data, the classifiers, the recipe, the table.

The tests build tiny random checkpoints in a temporary folder, so they check
what is computed quickly and without the shipped checkpoints; the last test
holds the shipped checkpoints to the figures the course advertises.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.lab.finetuning import (
    METHODS, TABLE_KEYS, BertClassifier, CoherenceData, FinetuneRecipe, GPTClassifier, accuracy, accuracy_by_corruption,
    bert_surprise, encode_examples, gpt_surprise,
    finetune, finetune_table, gpt_classification_loss, layer_features, layer_probe_predictions, make_classifier,
    results_table,
)
from course_lib.hub import load_pretrained, save_pretrained
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.objectives import gpt_finetune_loss, next_token_targets
from course_lib.tokenizer import Tokenizer

QUICK = FinetuneRecipe(epochs=1, min_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def data():
    return CoherenceData.build(n_stories=6000)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.for_story_world()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """A folder with tiny random tiny-bert and tiny-gpt checkpoints."""
    folder = tmp_path_factory.mktemp("checkpoints")
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=64, d_model=16, n_heads=2, n_layers=1,
                               d_ff=32, dropout=0.0)
    torch.manual_seed(1)  # not make_classifier's seed 0, so "scratch" differs from "pretrained" here
    save_pretrained("tiny-bert", BERT(config), tokenizer, {}, directory=folder)
    save_pretrained("tiny-gpt", GPT(config), tokenizer, {}, directory=folder)
    return folder


def test_labeled_data_comes_from_disjoint_splits(data):
    pool_texts = {e.tokens for e in data.pool}
    assert data.test and data.validation
    assert not pool_texts & {e.tokens for e in data.test}
    assert not pool_texts & {e.tokens for e in data.validation}
    assert all(len(e.story.sentences) == 1 for e in data.pool + data.test)
    assert {e.corruption for e in data.test} == {None, "pronoun", "place_activity", "time_activity"}
    longer = CoherenceData.build(n_stories=3000, max_sentences=2)
    assert max(len(e.story.sentences) for e in longer.pool) == 2


def test_labeled_sets_are_balanced_and_nested(data):
    small, large = data.labeled_set(32), data.labeled_set(128)
    assert [e.label for e in small].count(1) == 16
    assert [e.label for e in large].count(0) == 64
    assert set(e.tokens for e in small) <= set(e.tokens for e in large)
    assert data.labeled_set(32) == small  # the same seed gives the same set
    for bad in (0, 31, 10**6, 3.0):
        with pytest.raises(ValueError, match="n must be an even int"):
            data.labeled_set(bad)


def test_encoding_wraps_stories_in_the_family_s_special_tokens(data, tokenizer):
    ids, mask, labels = encode_examples(data.test[:5], tokenizer, "bert")
    assert ids.shape == mask.shape and labels.shape == (5,)
    assert (ids[:, 0] == tokenizer.cls_id).all()
    last = mask.sum(dim=1) - 1
    assert (ids[torch.arange(5), last] == tokenizer.sep_id).all()
    gpt_ids, _, _ = encode_examples(data.test[:5], tokenizer, "gpt")
    assert (gpt_ids[:, 0] == tokenizer.bos_id).all()
    with pytest.raises(ValueError, match="examples"):
        encode_examples([], tokenizer, "bert")


def padded_pair(examples, tokenizer, style):
    """A short story alone, and the same story padded in a batch with a longer one."""
    short, long = sorted(examples[:10], key=lambda e: len(e.tokens))[::9]
    alone = encode_examples([short], tokenizer, style)
    together = encode_examples([short, long], tokenizer, style)
    assert not together[1][0].all()  # the short story really is padded
    return alone, together


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bert_features_ignore_padding(data, tokenizer, checkpoints, pooling):
    model, _ = make_classifier("pretrained_full", FinetuneRecipe(pooling=pooling), directory=checkpoints)
    model.eval()
    (ids, mask, _), (batch_ids, batch_mask, _) = padded_pair(data.test, tokenizer, "bert")
    torch.testing.assert_close(model(batch_ids, batch_mask)[:1], model(ids, mask), atol=1e-5, rtol=1e-4)
    hidden = model.bert.encode(ids, mask)
    expected = hidden[:, 0] if pooling == "cls" else hidden.mean(dim=1)
    torch.testing.assert_close(model.features(ids, mask), expected)
    with pytest.raises(ValueError, match="pooling"):
        BertClassifier(model.bert, pooling="max")


def test_gpt_classifier_reads_the_last_real_token(data, tokenizer, checkpoints):
    model, _ = make_classifier("gpt_task_only", directory=checkpoints)
    model.eval()
    (ids, mask, _), (batch_ids, batch_mask, _) = padded_pair(data.test, tokenizer, "gpt")
    logits, lm_logits = model(ids, mask)
    torch.testing.assert_close(model(batch_ids, batch_mask)[0][:1], logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lm_logits, model.gpt(ids))
    torch.testing.assert_close(logits, model.head(model.gpt.encode(ids)[:, -1]))
    with pytest.raises(TypeError, match="gpt must be"):
        GPTClassifier(model.head)


def test_gpt_recipe_adds_the_weighted_next_token_loss(data, tokenizer, checkpoints):
    model, _ = make_classifier("gpt_task_plus_lm", directory=checkpoints)
    ids, mask, labels = encode_examples(data.test[:6], tokenizer, "gpt")
    class_logits, lm_logits = model.eval()(ids, mask)
    _, targets = next_token_targets(ids, mask)
    expected = gpt_finetune_loss(class_logits, labels, lm_logits[:, :-1], targets, 0.5)
    torch.testing.assert_close(gpt_classification_loss(0.5)(model, (ids, mask, labels)), expected)
    torch.testing.assert_close(gpt_classification_loss(0.0)(model, (ids, mask, labels)),
                               F.cross_entropy(class_logits, labels))


def test_each_method_starts_from_the_right_body(checkpoints):
    full, _ = make_classifier("pretrained_full", directory=checkpoints)
    again, _ = make_classifier("pretrained_full", directory=checkpoints)
    scratch, _ = make_classifier("scratch", directory=checkpoints)
    def weight(model):
        return model.bert.body.blocks[0].feed_forward.state_dict()

    assert all(torch.equal(a, b) for a, b in zip(weight(full).values(), weight(again).values()))
    assert not all(torch.equal(a, b) for a, b in zip(weight(full).values(), weight(scratch).values()))
    with pytest.raises(ValueError, match="method must be one of"):
        make_classifier("bert_large", directory=checkpoints)


def test_a_frozen_body_never_changes(data, checkpoints):
    labeled = data.labeled_set(16)
    result = finetune("pretrained_frozen", labeled, data.test[:50], QUICK, directory=checkpoints)
    fresh, _ = make_classifier("pretrained_frozen", directory=checkpoints)
    for (name, trained), (_, original) in zip(result.model.bert.state_dict().items(), fresh.bert.state_dict().items()):
        assert torch.equal(trained, original), name
    head = make_classifier("pretrained_frozen", directory=checkpoints)[0].head.state_dict()
    assert not all(torch.equal(a, b) for a, b in zip(result.model.head.state_dict().values(), head.values()))


def test_finetuning_is_deterministic_and_measures_accuracy(data, tokenizer, checkpoints):
    labeled = data.labeled_set(16)
    first = finetune("scratch", labeled, data.test[:60], QUICK, seed=3, directory=checkpoints)
    second = finetune("scratch", labeled, data.test[:60], QUICK, seed=3, directory=checkpoints)
    assert first.history.train_loss == second.history.train_loss
    assert first.test_accuracy == second.test_accuracy
    assert len(first.history.steps) == QUICK.train_config(16).steps == 3
    ids, mask, labels = encode_examples(data.test[:60], tokenizer, "bert")
    predictions = first.model(ids, mask).argmax(dim=-1)
    expected = (predictions == labels).float().mean().item()
    assert accuracy(first.model, ids, mask, labels, batch_size=7) == pytest.approx(expected)


def test_recipe_steps_and_validation():
    recipe = FinetuneRecipe(epochs=30, min_steps=60, batch_size=32)
    assert recipe.train_config(256).steps == 240
    assert recipe.train_config(32).steps == 60
    assert recipe.train_config(8).batch_size == 8
    with pytest.raises(ValueError, match="epochs"):
        FinetuneRecipe(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        FinetuneRecipe(lr=0)


def test_finetune_table_has_every_figure(data, checkpoints):
    table = finetune_table(16, data, QUICK, directory=checkpoints)
    assert tuple(table) == TABLE_KEYS
    assert table["n_labels"] == 16
    assert table["transfer_gain"] == pytest.approx(table["pretrained_full"] - table["scratch"])
    assert all(0 <= table[method] <= 1 for method in METHODS)
    with pytest.raises(ValueError, match="lacks"):
        results_table(16, {"scratch": 0.5})


@pytest.mark.slow
def test_shipped_checkpoints_transfer():
    """With 256 labels, pretraining gives BERT a clear lead over the same model trained from scratch."""
    table = finetune_table(256)
    assert table["pretrained_full"] >= 0.80, table
    assert table["transfer_gain"] >= 0.15, table


def test_accuracy_by_corruption_covers_every_kind(data, tokenizer, checkpoints):
    model, _ = make_classifier("pretrained_full", directory=checkpoints)
    examples = data.test[:80]
    by_kind = accuracy_by_corruption(model, tokenizer, examples)
    assert set(by_kind) == {e.corruption or "coherent" for e in examples}
    ids, mask, labels = encode_examples(examples, tokenizer, "bert")
    coherent = labels == 1
    assert by_kind["coherent"] == pytest.approx(accuracy(model, ids[coherent], mask[coherent], labels[coherent]))


def test_gpt_surprise_is_the_largest_next_token_loss(data, tokenizer, checkpoints):
    model, _ = make_classifier("gpt_task_only", directory=checkpoints)
    example = data.test[0]
    ids = torch.tensor([tokenizer.encode(example.tokens, style="gpt")])
    inputs, targets = next_token_targets(ids)
    expected = F.cross_entropy(model.gpt(inputs)[0], targets[0], reduction="none").max()
    torch.testing.assert_close(gpt_surprise(model.gpt, tokenizer, data.test[:3])[0], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="gpt must be"):
        gpt_surprise(model, tokenizer, data.test[:3])


def test_bert_surprise_masks_each_word_in_turn(data, tokenizer):
    # The shipped tiny-bert: it was never asked to fill in [SEP], so counting it would show.
    bert = load_pretrained("tiny-bert").model.eval()
    examples = data.test[:3]
    surprise = bert_surprise(bert, tokenizer, examples)  # batched, so the shorter stories are padded
    assert surprise.shape == (3,)
    for example, story_surprise in zip(examples, surprise):
        ids = torch.tensor([tokenizer.encode(example.tokens, style="bert")])  # (1, T): [CLS] words [SEP]
        losses = []
        for position in range(1, ids.shape[1] - 1):  # the words only: [CLS] and [SEP] are never masked
            blanked = ids.clone()
            blanked[0, position] = tokenizer.mask_id
            losses.append(F.cross_entropy(bert(blanked)[0, position:position + 1], ids[0, position:position + 1]))
        torch.testing.assert_close(story_surprise, torch.stack(losses).max(), atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="bert must be"):
        bert_surprise(BertClassifier(bert), tokenizer, examples)


def test_held_out_sets_are_balanced(data):
    for examples in (data.validation, data.test):
        labels = [e.label for e in examples]
        assert labels.count(0) == labels.count(1) > 0


def test_layer_features_read_every_layer_and_ignore_padding(data, tokenizer):
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=64, d_model=16, n_heads=2, n_layers=2,
                               d_ff=32, dropout=0.1)
    torch.manual_seed(0)
    bert = BERT(config)  # in training mode: the features must still come without dropout
    ids, mask, _ = encode_examples(data.test[:10], tokenizer, "bert")
    mean = layer_features(bert, ids, mask)
    assert mean.shape == (3, 10, 16)
    assert bert.training
    with torch.no_grad():
        final = BertClassifier(bert, pooling="mean").eval().features(ids, mask)
    torch.testing.assert_close(mean[-1], final)
    torch.testing.assert_close(layer_features(bert, ids, mask, batch_size=3), mean)  # batches cut the stories apart
    maximum = layer_features(bert, ids, mask, pooling="max")
    padded = ids.masked_fill(~mask.bool(), tokenizer.mask_id)  # other tokens in the padding change nothing
    torch.testing.assert_close(layer_features(bert, padded, mask, pooling="max"), maximum)
    assert not torch.allclose(mean[0], mean[1])
    assert not bert.body.blocks[0]._forward_hooks  # the hooks are gone
    with pytest.raises(ValueError, match="pooling"):
        layer_features(bert, ids, mask, pooling="cls")


def test_a_layer_probe_finds_the_layer_that_holds_the_answer():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=generator)
    noise = torch.randn(2, 400, 8, generator=generator)
    informative = noise[1].clone()
    informative[:, 3] += 3 * (2 * labels - 1)          # layer 1 shows the label in one feature; layer 0 never
    features = torch.stack([noise[0], informative])     # (2, 400, 8)
    predictions = layer_probe_predictions(features[:, :200], labels[:200], features[:, 200:], FinetuneRecipe())
    assert predictions.shape == (2, 200)
    accuracy_by_layer = (predictions == labels[200:]).float().mean(dim=1)
    assert accuracy_by_layer[1] > 0.9 and accuracy_by_layer[0] < 0.65
    with pytest.raises(ValueError, match="same L"):
        layer_probe_predictions(features, labels, features[:1])
