"""Notebook 10's data: the rude answers, sampling, the exact judge, the labellers' comparisons, the KL."""
import copy
import random

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab.chat.data import (
    MAX_ANSWER_TOKENS, RUDE_ANSWER, Comparison, answer_log_probs, answer_token_log_probs, chat_questions,
    collect_comparisons, compare, comparison_kinds, encode_answers, flawed_answers, judge, judge_model, judged_rates,
    kl_from_reference, sample_answers, verifiable_reward,
)
from course_lib.lab.chat.sft import make_chat_writer
from course_lib.lab.asking.instruction import prompt_tokens

from tiny_checkpoints import checkpoints, data  # noqa: F401 (shared fixtures)

RUDE = (*RUDE_ANSWER, ".")


@pytest.fixture(scope="module")
def writer(checkpoints):
    return make_chat_writer(directory=checkpoints)


def test_the_judge_is_exact(data):
    question = data.test[0]
    right = (*question.answer_tokens, ".")
    assert judge(question, right) == "correct"
    assert judge(question, RUDE) == "rude"
    assert judge(question, ("figure", "park", ".")) == "rude"          # any rude word is rude
    assert judge(question, question.answer_tokens) == "wrong"          # no period: not finished
    assert judge(question, (*question.answer_tokens, "the", ".")) == "wrong"
    rates = judged_rates([question] * 4, [right, RUDE, RUDE, ("cafe", "cafe", ".")])
    assert rates == {"rude_rate": 0.5, "correct_rate": 0.25, "wrong_rate": 0.25}


def test_a_share_of_the_finetuning_answers_is_rude_and_it_is_seeded(data):
    questions = data.pool[:200]
    answers = flawed_answers(questions, 0.2, seed=3)
    assert sum(a == RUDE for a in answers) == 40
    assert all(a == RUDE or a == (*q.answer_tokens, ".") for q, a in zip(questions, answers))
    assert answers == flawed_answers(questions, 0.2, seed=3) != flawed_answers(questions, 0.2, seed=4)
    with pytest.raises(ValueError, match="rude_share"):
        flawed_answers(questions, 1.5)


def test_every_chat_question_leaves_room_for_the_rude_answer(data):
    kept = chat_questions(data.pool)
    assert 0 < len(kept) <= len(data.pool)
    assert all(len(prompt_tokens(q)) + MAX_ANSWER_TOKENS + 1 <= 64 for q in kept)


def test_answers_are_encoded_after_their_prompt_and_marked(data, writer):
    _, tokenizer = writer
    questions = data.test[:3]
    answers = [RUDE, (*questions[1].answer_tokens, "."), ("park",)]
    batch = encode_answers(questions, answers, tokenizer, end=True)
    for row, (q, a) in enumerate(zip(questions, answers)):
        tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[row][batch.attention_mask[row]])
        assert tokens == [*prompt_tokens(q), *a, "[EOS]"]
        assert tuple(tokenizer.convert_ids_to_tokens(batch.input_ids[row][batch.answer_mask[row]])) == a
    with pytest.raises(ValueError, match="as many"):
        encode_answers(questions, answers[:2], tokenizer)


def test_sampled_answers_are_seeded_and_end_at_their_period(data, writer):
    model, tokenizer = writer
    questions = chat_questions(data.test)[:30]
    answers = sample_answers(model, tokenizer, questions, seed=1)
    assert answers == sample_answers(model, tokenizer, questions, seed=1)
    assert answers != sample_answers(model, tokenizer, questions, seed=2)
    for answer in answers:
        assert 1 <= len(answer) <= MAX_ANSWER_TOKENS
        assert "." not in answer[:-1]
        assert answer[-1] == "." or len(answer) == MAX_ANSWER_TOKENS
    rates = judge_model(model, tokenizer, questions, samples=2, seed=1)
    assert sum(rates.values()) == pytest.approx(1.0)


def test_a_labeller_prefers_correct_over_wrong_over_rude_and_skips_ties(data):
    question, rng = data.test[0], random.Random(0)
    right, wrong = (*question.answer_tokens, "."), ("the", "the", ".")
    assert compare(question, wrong, right, 0.0, rng) == Comparison(question, right, wrong)
    assert compare(question, RUDE, wrong, 0.0, rng) == Comparison(question, wrong, RUDE)
    assert compare(question, wrong, ("a", "."), 0.0, rng) is None
    assert compare(question, right, RUDE, 1.0, rng) == Comparison(question, RUDE, right, flipped=True)
    with pytest.raises(ValueError, match="noise"):
        collect_comparisons(None, None, [question], 1, noise=-0.1)


def test_comparisons_are_collected_from_two_samples_of_the_model(data, writer):
    model, tokenizer = writer
    questions = chat_questions(data.pool)[:400]
    comparisons = collect_comparisons(model, tokenizer, questions, 20, noise=0.0, seed=0)
    assert len(comparisons) == 20
    assert comparisons == collect_comparisons(model, tokenizer, questions, 20, noise=0.0, seed=0)
    assert all(not c.flipped and c.verdicts[0] != c.verdicts[1] for c in comparisons)
    assert sum(comparison_kinds(comparisons).values()) == 20
    with pytest.raises(ValueError, match="pass more questions"):
        collect_comparisons(model, tokenizer, questions[:3], 20)


def test_answer_log_probs_sum_the_answer_tokens_only(data, writer):
    model, tokenizer = writer
    questions = data.test[:2]
    answers = [RUDE, ("park", ".")]
    batch = encode_answers(questions, answers, tokenizer)
    with torch.no_grad():
        got = answer_log_probs(model, batch)
        for row, (q, a) in enumerate(zip(questions, answers)):
            ids = torch.tensor([tokenizer.encode([*prompt_tokens(q), *a])])
            log_probs = F.log_softmax(model(ids[:, :-1]), dim=-1)[0]                # (T-1, V)
            start = len(prompt_tokens(q))
            expected = sum(log_probs[t - 1, ids[0, t]] for t in range(start, start + len(a)))
            assert got[row].item() == pytest.approx(expected.item(), abs=1e-4)


def test_answer_token_log_probs_add_up_to_the_answers_log_probability(data, writer):
    model, tokenizer = writer
    batch = encode_answers(data.test[:3], [RUDE, ("park", "."), ("in", "the", "morning", ".")], tokenizer)
    with torch.no_grad():
        per_token, mask = answer_token_log_probs(model, batch)
        torch.testing.assert_close(per_token.sum(dim=1), answer_log_probs(model, batch))
    assert mask.sum(dim=1).tolist() == [5, 2, 4]
    assert (per_token[~mask] == 0).all()


def test_the_verifiable_reward_is_one_point_for_polite_and_one_for_correct(data):
    question = data.test[0]
    right = (*question.answer_tokens, ".")
    assert verifiable_reward([question] * 3, [RUDE, ("cafe", "cafe", "."), right]).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="as many"):
        verifiable_reward([question], [])


def test_a_model_is_at_zero_kl_from_itself_and_above_zero_from_another(data, writer):
    model, tokenizer = writer
    questions = chat_questions(data.test)[:40]
    assert kl_from_reference(model, model, tokenizer, questions) == pytest.approx(0.0, abs=1e-6)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.lm_head.weight.mul_(3.0)  # sharper next-token distributions
    assert kl_from_reference(moved, model, tokenizer, questions) > 0.01
