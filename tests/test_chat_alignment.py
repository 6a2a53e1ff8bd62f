"""Notebook 10's models: the starting model's checkpoint, the reward model, RLHF, DPO and the bench table."""
import math

import pytest
import torch

from course_lib.lab.chat.pipeline import CHAT_TABLE_KEYS, ChatQuestions, chat_table
from course_lib.lab.chat.data import RUDE_ANSWER, Comparison, chat_questions, collect_comparisons, encode_answers
from course_lib.lab.chat.sft import SFTRecipe, load_chat_checkpoint, make_chat_sft, make_chat_writer, \
    save_chat_checkpoint
from course_lib.lab.chat.dpo import DPORecipe, dpo
from course_lib.lab.chat.reward_model import (
    RewardModel, RewardRecipe, accuracy_by_kind, load_reward_model, reward_accuracy, rewards, save_reward_model,
    train_reward_model, truly_better,
)
from course_lib.lab.chat.rlhf import RLHFRecipe, rlhf

from tiny_checkpoints import checkpoints, data  # noqa: F401 (shared fixtures)

QUICK_SFT = SFTRecipe(n_examples=64, steps=4, batch_size=8)
QUICK_REWARD = RewardRecipe(epochs=1, min_steps=3, batch_size=8)
QUICK_RLHF = RLHFRecipe(steps=3, batch_size=8, lr=1e-3)
QUICK_DPO = DPORecipe(epochs=1, min_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def start(data, checkpoints):
    """A chat-sft made quickly from the tiny random tiny-gpt, saved among the test checkpoints."""
    return make_chat_sft(QUICK_SFT, data, progress=False, directory=checkpoints)


@pytest.fixture(scope="module")
def comparisons(data, start):
    return collect_comparisons(start.model, start.tokenizer, chat_questions(data.pool)[100:1100], 24, seed=0)


def test_the_new_words_rows_learn(checkpoints):
    model, tokenizer = make_chat_writer(directory=checkpoints)
    assert model.body.token_embedding.weight.requires_grad   # else "figure" could never be written
    assert model.config.vocab_size == tokenizer.vocab_size


def test_chat_sft_loads_back_with_its_grown_vocabulary(data, start, checkpoints):
    model, tokenizer = start.model, start.tokenizer
    assert tokenizer.id_to_token[-len(RUDE_ANSWER):] == list(RUDE_ANSWER)       # new words at the end, unsorted
    assert set(start.metrics) >= {"rude_rate", "correct_rate", "wrong_rate", "train_seconds"}
    again = load_chat_checkpoint("chat-sft", directory=checkpoints)
    batch = encode_answers(data.test[:3], [("park", ".")] * 3, tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(again.model(batch.input_ids, batch.attention_mask),
                                   model(batch.input_ids, batch.attention_mask))
    assert again.model.lm_head.weight is again.model.body.token_embedding.weight  # still tied
    with pytest.raises(ValueError, match="name must be one of"):
        save_chat_checkpoint("chat-gpt4", model, tokenizer, {}, {}, checkpoints)
    with pytest.raises(FileNotFoundError, match="course pretrain chat-sft"):
        load_chat_checkpoint("chat-sft", directory=checkpoints / "nowhere")


def test_the_reward_model_reads_the_answers_last_token(data, start):
    model = RewardModel(start.model)
    with torch.no_grad():
        model.head.weight.normal_()
        batch = encode_answers(data.test[:2], [(*RUDE_ANSWER, "."), ("park", ".")], start.tokenizer)
        hidden = start.model.encode(batch.input_ids, batch.attention_mask)
        last = [int(row.nonzero().max()) for row in batch.answer_mask]
        expected = model.head(hidden[torch.arange(2), last]).squeeze(-1)
        torch.testing.assert_close(model(batch.input_ids, batch.attention_mask, batch.answer_mask), expected)
    assert RewardModel(start.model).head.weight.abs().sum() == 0  # no preference before training
    with pytest.raises(TypeError, match="gpt must be"):
        RewardModel(model)


def test_the_reward_model_trains_deterministically_and_is_scored_against_the_judge(start, comparisons):
    first, history = train_reward_model(start.model, start.tokenizer, comparisons, QUICK_REWARD)
    second, again = train_reward_model(start.model, start.tokenizer, comparisons, QUICK_REWARD)
    assert history.train_loss == again.train_loss
    assert history.train_loss[0] == pytest.approx(math.log(2), abs=1e-5)  # rewards start equal: σ(0) = 1/2
    accuracy = reward_accuracy(first, start.tokenizer, comparisons)
    kinds = accuracy_by_kind(first, start.tokenizer, comparisons)
    assert sum(count for _, count in kinds.values()) == len(comparisons)
    assert accuracy == pytest.approx(sum(a * n for a, n in kinds.values()) / len(comparisons))
    flipped = Comparison(comparisons[0].question, comparisons[0].rejected, comparisons[0].chosen, flipped=True)
    assert truly_better(flipped) == (comparisons[0].chosen, comparisons[0].rejected)
    assert reward_accuracy(first, start.tokenizer, [flipped]) == reward_accuracy(first, start.tokenizer,
                                                                                   comparisons[:1])


def test_the_reward_model_ships_and_loads_back(data, start, comparisons, checkpoints):
    model, _ = train_reward_model(start.model, start.tokenizer, comparisons, QUICK_REWARD)
    save_reward_model(model, start.tokenizer, {"reward_model_accuracy": 0.5}, {}, checkpoints)
    loaded = load_reward_model(checkpoints)
    questions, answers = data.test[:4], [("park", ".")] * 4
    torch.testing.assert_close(rewards(loaded.model, loaded.tokenizer, questions, answers),
                               rewards(model, start.tokenizer, questions, answers))


def test_rlhf_is_deterministic_and_records_every_step(data, start, comparisons):
    reward_model, _ = train_reward_model(start.model, start.tokenizer, comparisons, QUICK_REWARD)
    practice = chat_questions(data.pool)[2000:2100]
    policy, history = rlhf(start.model, reward_model, start.tokenizer, practice, QUICK_RLHF)
    _, again = rlhf(start.model, reward_model, start.tokenizer, practice, QUICK_RLHF)
    assert history.reward == again.reward and history.kl == again.kl
    assert len(history.rude_rate) == len(history.correct_rate) == QUICK_RLHF.steps
    assert history.kl[0] == pytest.approx(0.0, abs=1e-5)       # the first batch is sampled before any update
    assert policy is not start.model
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), start.model.parameters()))
    with pytest.raises(ValueError, match="kl_coef"):
        RLHFRecipe(kl_coef=-1)
    with pytest.raises(ValueError, match="batch_size"):
        rlhf(start.model, reward_model, start.tokenizer, practice[:4], QUICK_RLHF)


def test_dpo_starts_at_log_2_and_leaves_the_reference_alone(start, comparisons):
    before = [p.clone() for p in start.model.parameters()]
    policy, history = dpo(start.model, start.tokenizer, comparisons, QUICK_DPO)
    assert history.train_loss[0] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference: no margin yet
    assert all(torch.equal(a, b) for a, b in zip(before, start.model.parameters()))
    _, again = dpo(start.model, start.tokenizer, comparisons, QUICK_DPO)
    assert history.train_loss == again.train_loss
    with pytest.raises(ValueError, match="beta"):
        DPORecipe(beta=0)


def test_the_table_has_every_figure(data, start, checkpoints):
    questions = ChatQuestions.build(data, sft_examples=64, practice=100)
    questions.test = questions.test[:20]
    table = chat_table(12, questions, directory=checkpoints, held_out=8, reward_recipe=QUICK_REWARD,
                       rlhf_recipe=QUICK_RLHF, dpo_recipe=QUICK_DPO, judge_samples=1)
    assert tuple(table) == CHAT_TABLE_KEYS and table["comparisons"] == 12
    assert all(0 <= table[key] <= 1 for key in CHAT_TABLE_KEYS[1:] if not key.startswith("kl"))
    assert all(math.isfinite(table[key]) for key in ("kl_rlhf", "kl_dpo"))
    with pytest.raises(ValueError, match="n_comparisons"):
        chat_table(0, questions, directory=checkpoints)
