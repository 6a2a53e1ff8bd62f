"""Extractive question answering (notebook 09): inputs, segments, the span head, its loss, scores and runs.

Fine-tuning runs use tiny random checkpoints in a temporary folder, so they
check what is computed, quickly; the course's figures are ``course bench``'s.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.answers import best_span
from course_lib.lab.asking.qa import (
    METHODS, QA_TABLE_KEYS, SpanQA, encode_questions, evaluate_qa, finetune_qa, make_qa_model, qa_table, span_loss,
    span_scores, token_f1,
)
from course_lib.lab.asking.questions import QuestionData
from course_lib.lab.asking.recipes import QA_LEARNING_RATES, qa_recipe
from course_lib.tokenizer import SEP

from tiny_checkpoints import QUICK, checkpoints, data  # noqa: F401 (shared fixtures)


def test_inputs_are_question_then_story_in_two_segments(data, checkpoints):
    _, tokenizer = make_qa_model("pretrained_full", directory=checkpoints)
    questions = data.test[:6]
    batch = encode_questions(questions, tokenizer)
    for row, question in enumerate(questions):
        tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[row][batch.attention_mask[row]])
        assert tokens == ["[CLS]", *question.tokens, SEP, *question.story.tokens, SEP]
        segments = batch.segment_ids[row][batch.attention_mask[row]].tolist()
        assert segments == [0] * (len(question.tokens) + 2) + [1] * (len(question.story.tokens) + 1)
        story = [tokens[i] for i in batch.story_mask[row].nonzero()[:, 0].tolist()]
        assert story == list(question.story.tokens)            # [SEP] and padding can never be answers
        answer = tokens[batch.start[row]:batch.end[row] + 1]
        assert answer == list(question.answer_tokens)          # end is inclusive
    assert "[UNK]" not in tokenizer.convert_ids_to_tokens(batch.input_ids.flatten())


def test_span_loss_is_the_cross_entropy_of_start_and_end_over_the_story(data, checkpoints):
    model, tokenizer = make_qa_model("pretrained_full", directory=checkpoints)
    batch = encode_questions(data.test[:4], tokenizer)
    model.eval()
    start_logits, end_logits = model(batch.input_ids, batch.attention_mask, batch.segment_ids)
    assert start_logits.shape == end_logits.shape == batch.input_ids.shape
    expected = 0.0
    for row in range(4):
        story = batch.story_mask[row]
        first = int(story.nonzero()[0])                        # the story's positions are contiguous
        for logits, target in ((start_logits, batch.start), (end_logits, batch.end)):
            expected += F.cross_entropy(logits[row, story][None], (target[row:row + 1] - first)) / 8
    torch.testing.assert_close(span_loss(model, batch.tensors()), expected)


def test_the_head_is_a_start_vector_and_an_end_vector(data, checkpoints):
    model, tokenizer = make_qa_model("pretrained_full", directory=checkpoints)
    batch = encode_questions(data.test[:3], tokenizer)
    model.eval()
    start_logits, end_logits = model(batch.input_ids, batch.attention_mask, batch.segment_ids)
    hidden = model.bert.encode(batch.input_ids, batch.attention_mask, batch.segment_ids)    # (3, T, d_model)
    S, E = model.head.weight                                                                # (d_model,) each
    torch.testing.assert_close(start_logits, hidden @ S)
    torch.testing.assert_close(end_logits, hidden @ E)
    assert [name for name, _ in model.head.named_parameters()] == ["weight"]


def test_each_method_gets_its_own_rate_at_the_nearest_size():
    assert qa_recipe("scratch", 4096).lr == QA_LEARNING_RATES["scratch"][4096]
    assert qa_recipe("pretrained_frozen", 300).lr == QA_LEARNING_RATES["pretrained_frozen"][256]
    assert qa_recipe("pretrained_full", 2500).lr == QA_LEARNING_RATES["pretrained_full"][4096]
    with pytest.raises(ValueError, match="method must be one of"):
        qa_recipe("frozen", 256)
    with pytest.raises(ValueError, match="n_examples"):
        qa_recipe("scratch", -1)


def test_exact_match_and_f1_of_perfect_and_partial_answers(data, checkpoints):
    _, tokenizer = make_qa_model("pretrained_full", directory=checkpoints)
    questions = data.test[:5]
    batch = encode_questions(questions, tokenizer)
    assert span_scores(questions, batch.start, batch.end, batch.story_start) == {"exact_match": 1.0, "f1": 1.0}
    assert token_f1(("the", "dog"), ("walk", "the", "dog")) == pytest.approx(0.8)
    assert token_f1(("park",), ("cafe",)) == 0.0


def test_predictions_are_best_spans_inside_the_story(data, checkpoints):
    model, tokenizer = make_qa_model("scratch", directory=checkpoints)
    batch = encode_questions(data.test[:8], tokenizer)
    with torch.no_grad():
        start_logits, end_logits = model.eval()(batch.input_ids, batch.attention_mask, batch.segment_ids)
    start, end = best_span(start_logits, end_logits, batch.story_mask, 5)
    assert batch.story_mask[torch.arange(8), start].all() and batch.story_mask[torch.arange(8), end].all()
    assert ((end >= start) & (end - start < 5)).all()
    scores = evaluate_qa(model, tokenizer, data.test[:8])
    assert scores == span_scores(data.test[:8], start, end, batch.story_start)


def test_a_frozen_body_never_changes_and_methods_start_where_they_should(data, checkpoints):
    result = finetune_qa("pretrained_frozen", data.labeled_set(16), data.test[:10], QUICK, directory=checkpoints)
    fresh, _ = make_qa_model("pretrained_frozen", directory=checkpoints)
    for (name, trained), original in zip(result.model.bert.state_dict().items(), fresh.bert.state_dict().values()):
        assert torch.equal(trained, original), name
    scratch, _ = make_qa_model("scratch", directory=checkpoints)
    blocks = fresh.bert.body.blocks[0].state_dict()
    assert not all(torch.equal(a, b) for a, b in zip(blocks.values(), scratch.bert.body.blocks[0].state_dict().values()))
    with pytest.raises(ValueError, match="method must be one of"):
        make_qa_model("bert_large", directory=checkpoints)
    with pytest.raises(TypeError, match="bert must be"):
        SpanQA(fresh)


def test_finetuning_is_deterministic_and_the_table_has_every_figure(data, checkpoints):
    first = finetune_qa("scratch", data.labeled_set(16), data.test[:20], QUICK, seed=2, directory=checkpoints)
    second = finetune_qa("scratch", data.labeled_set(16), data.test[:20], QUICK, seed=2, directory=checkpoints)
    assert first.history.train_loss == second.history.train_loss and first.exact_match == second.exact_match
    assert 0 <= first.exact_match <= first.f1 <= 1
    table = qa_table(16, QuestionData(data.pool, data.validation[:10], data.test[:10]), QUICK, directory=checkpoints)
    assert tuple(table) == QA_TABLE_KEYS and table["n_labels"] == 16
    assert table["transfer_gain"] == pytest.approx(table["pretrained_full"] - table["scratch"])
    assert all(0 <= table[method] <= 1 for method in METHODS)
