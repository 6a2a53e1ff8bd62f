"""Supervised fine-tuning of GPT on questions and answers (notebook 09): the format, the answer-only loss, reading answers."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.generation import generate
from course_lib.lab.asking.instruction import (
    SFT_TABLE_KEYS, accuracy_by_kind, answer_accuracy, answer_only_loss, encode_examples, finetune_writer, make_writer,
    prompt_lengths, prompt_tokens, sft_loss, sft_table, write_answers,
)
from course_lib.lab.asking.questions import QuestionData
from course_lib.lab.asking.recipes import SFT_LEARNING_RATES, sft_recipe

from tiny_checkpoints import QUICK, checkpoints, data  # noqa: F401 (shared fixtures)


def test_examples_are_story_question_answer_and_only_the_answer_is_marked(data, checkpoints):
    _, tokenizer = make_writer("pretrained", directory=checkpoints)
    question = data.test[0]
    batch = encode_examples([question], tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    assert tokens == ["[BOS]", *question.story.tokens, "question", ":", *question.tokens, "answer", ":",
                      *question.answer_tokens, ".", "[EOS]"]
    assert [t for t, marked in zip(tokens, batch.answer_mask[0]) if marked] == [*question.answer_tokens, "."]
    assert list(prompt_tokens(question)) == tokens[:len(tokens) - len(question.answer_tokens) - 2]
    assert prompt_lengths([question]).tolist() == [len(prompt_tokens(question))]


def test_question_first_holds_the_same_tokens_in_another_order(data, checkpoints):
    _, tokenizer = make_writer("pretrained", directory=checkpoints)
    question = data.test[0]
    first = prompt_tokens(question, "question_first")
    assert first == ("[BOS]", "question", ":", *question.tokens, *question.story.tokens, "answer", ":")
    assert sorted(first) == sorted(prompt_tokens(question))
    batch = encode_examples([question], tokenizer, order="question_first")
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    assert tokens == [*first, *question.answer_tokens, ".", "[EOS]"]
    assert [t for t, marked in zip(tokens, batch.answer_mask[0]) if marked] == [*question.answer_tokens, "."]
    with pytest.raises(ValueError, match="order must be one of"):
        prompt_tokens(question, "answer_first")


def test_the_sft_loss_counts_what_follows_the_prompt_only(data, checkpoints):
    model, tokenizer = make_writer("pretrained", directory=checkpoints)
    questions = data.test[:4]
    batch = encode_examples(questions, tokenizer)
    model.eval()
    logits = model(batch.input_ids, batch.attention_mask)                     # (4, T, V)
    expected, count = 0.0, 0
    for row, question in enumerate(questions):
        start = len(prompt_tokens(question))                                   # the answer's first position
        stop = int(batch.attention_mask[row].sum())                            # the answer, its period and [EOS]
        for position in range(start, stop):                                    # predicted from position - 1
            expected = expected + F.cross_entropy(logits[row, position - 1], batch.input_ids[row, position])
            count += 1
    loss = sft_loss(model, (batch.input_ids, batch.attention_mask, prompt_lengths(questions)))
    torch.testing.assert_close(loss, expected / count)
    assert count == sum(len(q.answer_tokens) + 2 for q in questions)


def test_the_answer_mask_loss_counts_the_marked_tokens_only(data, checkpoints):
    model, tokenizer = make_writer("pretrained", directory=checkpoints)
    batch = encode_examples(data.test[:4], tokenizer)
    model.eval()
    logits = model(batch.input_ids[:, :-1], batch.attention_mask[:, :-1])    # (4, T-1, V)
    targets = batch.input_ids[:, 1:]
    counted = batch.answer_mask[:, 1:]                                        # target t + 1 is an answer token
    expected = F.cross_entropy(logits[counted], targets[counted])
    loss = answer_only_loss(model, (batch.input_ids, batch.attention_mask, batch.answer_mask))
    torch.testing.assert_close(loss, expected)


def test_written_answers_are_greedy_continuations_cut_at_the_period(data, checkpoints):
    model, tokenizer = make_writer("scratch", directory=checkpoints)
    questions = data.test[:6]
    written = write_answers(model, tokenizer, questions, max_answer_tokens=3)
    for question, answer in zip(questions, written):
        prompt = torch.tensor([tokenizer.encode(prompt_tokens(question))])
        words = tokenizer.convert_ids_to_tokens(generate(model, prompt, 3, greedy=True)[0, prompt.shape[1]:])
        assert answer == (tuple(words[:words.index(".")]) if "." in words else (*words, "..."))
    correct = sum(answer == q.answer_tokens for answer, q in zip(write_answers(model, tokenizer, questions), questions))
    assert answer_accuracy(model, tokenizer, questions) == pytest.approx(correct / 6)
    assert set(accuracy_by_kind(model, tokenizer, questions)) == {q.kind for q in questions}


def test_finetuning_is_deterministic(data, checkpoints):
    first = finetune_writer("scratch", data.labeled_set(16), data.test[:10], QUICK, seed=2, directory=checkpoints)
    second = finetune_writer("scratch", data.labeled_set(16), data.test[:10], QUICK, seed=2, directory=checkpoints)
    assert first.history.train_loss == second.history.train_loss
    assert first.answer_accuracy == second.answer_accuracy


def test_the_table_has_every_figure(data, checkpoints):
    small = QuestionData(data.pool, data.validation[:10], data.test[:10])
    table = sft_table(16, small, QUICK, directory=checkpoints)
    assert tuple(table) == SFT_TABLE_KEYS and table["n_examples"] == 16
    assert all(0 <= table[key] <= 1 for key in SFT_TABLE_KEYS[1:])
    with pytest.raises(ValueError, match="method must be one of"):
        make_writer("gpt4", directory=checkpoints)


def test_a_deeper_model_from_scratch_keeps_every_other_size(checkpoints):
    deeper, _ = make_writer("scratch", directory=checkpoints, n_layers=3)
    usual, _ = make_writer("scratch", directory=checkpoints)
    assert len(deeper.body.blocks) == 3 and deeper.config.d_model == usual.config.d_model
    assert deeper.config.vocab_size == usual.config.vocab_size
    with pytest.raises(ValueError, match="n_layers is for method 'scratch' only"):
        make_writer("pretrained", directory=checkpoints, n_layers=3)


def test_each_method_gets_the_rate_chosen_at_the_nearest_size():
    rates = SFT_LEARNING_RATES["pretrained"]
    assert rates[4096] != rates[1024]  # so that the nearest size can be told from the other
    assert sft_recipe("pretrained", 4096).lr == rates[4096]
    assert sft_recipe("pretrained", 3000).lr == rates[4096]   # nearer 4,096 than 1,024 in ratio
    assert sft_recipe("pretrained", 1500).lr == rates[1024]
    assert sft_recipe("pretrained", 10).lr == rates[256]
    assert sft_recipe("scratch", 1024).lr == SFT_LEARNING_RATES["scratch"][1024]
    with pytest.raises(ValueError, match="method must be one of"):
        sft_recipe("frozen", 256)
    with pytest.raises(ValueError, match="n_examples"):
        sft_recipe("pretrained", 0)
