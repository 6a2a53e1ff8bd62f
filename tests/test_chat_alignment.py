"""Notebook 10's models: the starting model's checkpoint, the reward model, RLHF, RLVR, DPO, best-of-n, the bench table."""
import copy
import math

import pytest
import torch

from course_lib.alignment import policy_gradient_loss
from course_lib.lab.chat.best_of_n import best_of_n_rates, judge_scores, kl_bound, majority_rates, pick_best, \
    sample_many
from course_lib.lab.chat.pipeline import CHAT_TABLE_KEYS, CORRECTNESS_KINDS, STYLE_KINDS, ChatQuestions, \
    accuracy_on, chat_table
from course_lib.lab.chat.data import RUDE_ANSWER, Comparison, answer_token_log_probs, chat_questions, \
    collect_comparisons, encode_answers, judge, sample_answers
from course_lib.lab.chat.sft import SFTRecipe, load_chat_checkpoint, make_chat_sft, make_chat_writer, \
    save_chat_checkpoint
from course_lib.lab.chat.dpo import DPORecipe, dpo
from course_lib.lab.chat.reward_model import (
    RewardModel, RewardRecipe, accuracy_by_kind, load_reward_model, reward_accuracy, rewards, save_reward_model,
    train_reward_model, truly_better,
)
from course_lib.lab.chat.rlhf import RLHFRecipe, judge_reward, reinforce_step, reward_model_reward, rlhf, rlvr
from course_lib.lab.chat.sweeps import BEST_OF, SECTIONS, SEEDS, SWEEP_SIZES, load_results, \
    main as write_sweeps

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


def test_a_reinforce_step_is_the_policy_gradient_loss_whitened_clipped_and_applied(data, start, comparisons):
    reward_model, _ = train_reward_model(start.model, start.tokenizer, comparisons, QUICK_REWARD)
    asked = chat_questions(data.pool)[2000:2008]
    stepped, by_hand = copy.deepcopy(start.model), copy.deepcopy(start.model)
    optimizer = torch.optim.SGD(stepped.parameters(), lr=0.5)
    answers, figures = reinforce_step(stepped, start.model, reward_model_reward(reward_model), start.tokenizer,
                                      asked, optimizer, kl_coef=0.2, seed=5)

    assert answers == sample_answers(start.model, start.tokenizer, asked, seed=5)   # sampled before the update
    batch = encode_answers(asked, answers, start.tokenizer)
    with torch.no_grad():
        scores = reward_model(batch.input_ids, batch.attention_mask, batch.answer_mask)
        reference, mask = answer_token_log_probs(start.model, batch)
    log_probs, _ = answer_token_log_probs(by_hand, batch)
    shaped = scores - 0.2 * (log_probs.detach() - reference).sum(dim=1)
    loss = policy_gradient_loss(log_probs, reference, mask, scores, 0.2, shaped.mean()) / (shaped.std() + 1e-6)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
    with torch.no_grad():
        for parameter in by_hand.parameters():
            parameter -= 0.5 * parameter.grad
    for a, b in zip(stepped.parameters(), by_hand.parameters()):
        torch.testing.assert_close(a, b)
    assert figures["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert figures["reward"] == pytest.approx(scores.mean().item(), rel=1e-5)


def test_rlvr_is_rewarded_by_the_judge_and_is_deterministic(data, start):
    practice = chat_questions(data.pool)[2000:2100]
    policy, history = rlvr(start.model, start.tokenizer, practice, QUICK_RLHF)
    _, again = rlvr(start.model, start.tokenizer, practice, QUICK_RLHF)
    assert history.reward == again.reward and history.kl == again.kl
    # the judge's reward is 2 for correct, 1 for wrong, 0 for rude: its mean follows from the judged shares
    for reward, rude, correct in zip(history.reward, history.rude_rate, history.correct_rate):
        assert reward == pytest.approx(2 * correct + (1 - rude - correct), abs=1e-6)
    question = practice[0]
    assert judge_reward([question], [(*question.answer_tokens, ".")], None).tolist() == [2.0]
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), start.model.parameters()))


def test_best_of_n_keeps_the_first_of_the_best_and_the_judge_finds_any_correct_answer(data, start):
    scores = torch.tensor([[0.0, 2.0, 2.0, 1.0], [3.0, 1.0, 1.0, 3.0]])
    assert pick_best(scores, 1).tolist() == [0, 0]
    assert pick_best(scores, 4).tolist() == [1, 0]
    with pytest.raises(ValueError, match="N >= n = 5"):
        pick_best(scores, 5)
    questions = chat_questions(data.test)[:30]
    samples = sample_many(start.model, start.tokenizer, questions, 4, seed=3)
    assert [len(s) for s in samples] == [4] * 30
    table = best_of_n_rates(questions, samples, judge_scores(questions, samples), (1, 2, 4))
    for n, rates in table.items():
        any_correct = sum(any(judge(q, a) == "correct" for a in s[:n]) for q, s in zip(questions, samples))
        assert rates["correct_rate"] == pytest.approx(any_correct / 30)
    assert table[1]["correct_rate"] <= table[2]["correct_rate"] <= table[4]["correct_rate"]
    assert kl_bound(1) == 0 and kl_bound(16) == pytest.approx(math.log(16) - 15 / 16)


def test_the_majority_vote_counts_polite_answers_only(data):
    question = data.test[0]
    right, wrong, rude = (*question.answer_tokens, "."), ("cafe", "cafe", "."), (*RUDE_ANSWER, ".")
    samples = [[rude, wrong, right, rude, right, wrong, wrong]]
    table = majority_rates([question], samples, (1, 3, 5, 7))
    assert [table[n]["correct_rate"] for n in (1, 3, 5, 7)] == [0.0, 0.0, 1.0, 0.0]   # a tie goes to the earlier
    assert table[1]["rude_rate"] == 1.0                                                  # no polite answer to vote


def test_the_shipped_results_hold_what_notebook_10_plots():
    results = load_results()
    assert set(results) == set(SECTIONS)
    main = results["main"]
    assert tuple(main["table"]) == CHAT_TABLE_KEYS
    for method in ("rlhf", "rlvr"):
        assert all(len(values) == RLHFRecipe().steps for values in main[method]["history"].values())
    held_out = main["held_out_by_kind"]
    assert sum(kind["pairs"] for kind in held_out.values()) == 500
    assert main["table"]["reward_model_accuracy_correctness"] == held_out["correct>wrong"]["accuracy"]
    assert [row["n"] for row in results["best_of_n"]] == list(BEST_OF)
    judged = [row["judge"]["correct_rate"] for row in results["best_of_n"]]
    assert judged == sorted(judged)                             # more tries never find fewer correct answers
    assert results["best_of_n"][0]["judge"] == results["best_of_n"][0]["reward_model"]   # n = 1: no choice
    assert sorted((run["method"], run["seed"]) for run in results["seeds"]) == sorted(
        (method, seed) for method in ("rlhf", "rlvr") for seed in SEEDS)
    assert [row["comparisons"] for row in results["comparisons"]] == list(SWEEP_SIZES)
    assert [e["name"] for e in results["failures"]] == ["no KL penalty", "50 comparisons"]


def test_the_results_writer_refuses_an_unknown_section(tmp_path, capsys):
    assert write_sweeps(["everything"], tmp_path / "results.json") == 2
    assert "unknown sections ['everything']" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


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
    table = chat_table(24, questions, directory=checkpoints, held_out=24, reward_recipe=QUICK_REWARD,
                       rlhf_recipe=QUICK_RLHF, dpo_recipe=QUICK_DPO, judge_samples=1)
    assert tuple(table) == CHAT_TABLE_KEYS and table["comparisons"] == 24
    split = ("reward_model_accuracy_style", "reward_model_accuracy_correctness")  # NaN where a kind has no pair
    assert all(0 <= table[key] <= 1 for key in CHAT_TABLE_KEYS[1:] if not key.startswith("kl") and key not in split)
    assert all(0 <= table[key] <= 1 or math.isnan(table[key]) for key in split)
    assert all(math.isfinite(table[key]) for key in ("kl_rlhf", "kl_rlvr", "kl_dpo"))
    with pytest.raises(ValueError, match="n_comparisons"):
        chat_table(0, questions, directory=checkpoints)


def test_the_accuracy_of_a_group_of_kinds_weighs_each_kind_by_its_pairs():
    by_kind = {"correct>rude": (1.0, 30), "wrong>rude": (0.9, 10), "correct>wrong": (0.5, 60)}
    assert accuracy_on(by_kind, STYLE_KINDS) == pytest.approx((30 + 9) / 40)
    assert accuracy_on(by_kind, CORRECTNESS_KINDS) == pytest.approx(0.5)
    assert math.isnan(accuracy_on({"correct>rude": (1.0, 3)}, CORRECTNESS_KINDS))
