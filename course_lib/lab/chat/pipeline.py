"""From GPT to ChatGPT, the whole lesson in one place: the flawed model, preferences, RLHF, RLVR and DPO (notebook 10).

=================  ==========================================================
``data``           the rude answers, sampling, the exact judge, comparisons
``sft``            the starting model (``chat-sft``) and the chat checkpoints
``reward_model``   GPT's body + a scalar head, Bradley–Terry on comparisons
``rlhf``           REINFORCE with a KL penalty, towards the reward model
                   (RLHF) or towards the exact judge (RLVR)
``dpo``            the same comparisons, no reward model, no sampling
=================  ==========================================================

Every model is judged the same way: answers to the test questions sampled at
temperature 1 (the rude habit is a share of samples, which greedy decoding
would hide), each called rude, correct or wrong by the exact judge, never
by the reward model; and its KL from the starting model per answer token
(``data.kl_from_reference``). ``chat_table`` is ``course bench``'s ``chat``.

The questions of each stage are disjoint: the starting model was fine-tuned
on the first questions of the pool, the labellers compare answers to the
next ones, RLHF and RLVR practise on the ones after; the test questions only measure.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from course_lib.hub import CHECKPOINT_DIR, Pretrained
from course_lib.lab.chat.data import LABEL_NOISE, Comparison, chat_questions, check_share, collect_comparisons, \
    judge_model, kl_from_reference
from course_lib.lab.chat.sft import CHAT_CHECKPOINTS, CHAT_SFT_RECIPE, load_chat_checkpoint, make_chat_sft
from course_lib.lab.chat.dpo import DPO_RECIPE, DPORecipe, dpo
from course_lib.lab.asking.questions import Question, QuestionData
from course_lib.lab.chat.reward_model import REWARD_RECIPE, RewardModel, RewardRecipe, accuracy_by_kind, \
    load_reward_model, reward_accuracy, save_reward_model, train_reward_model
from course_lib.lab.chat.rlhf import RLHF_RECIPE, RLHFHistory, RLHFRecipe, rlhf, rlvr
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.utils import check_positive_int

# The bench's number of comparisons, and the held-out comparisons the reward model's accuracy is measured on.
CHAT_COMPARISONS = 2000
HELD_OUT_COMPARISONS = 500
# The questions RLHF and RLVR practise on.
RLHF_PROMPTS = 10_000


@dataclass
class ChatQuestions:
    """The questions of each stage, disjoint: ``labelling`` (comparisons), ``practice`` (RLHF), ``test``."""

    labelling: list[Question]
    practice: list[Question]
    test: list[Question]

    @classmethod
    def build(cls, data: QuestionData | None = None, sft_examples: int = CHAT_SFT_RECIPE.n_examples,
              practice: int = RLHF_PROMPTS, seed: int = 0) -> "ChatQuestions":
        """The pool after the starting model's ``sft_examples``: the last ``practice`` for RLHF, the rest labelled."""
        data = data or QuestionData.build(seed=seed)
        pool = chat_questions(data.pool)[sft_examples:]
        if len(pool) < 2 * practice:
            raise ValueError(f"the pool holds {len(pool)} unused questions, fewer than 2 * practice = {2 * practice}")
        return cls(pool[:-practice], pool[-practice:], chat_questions(data.test))


@dataclass
class Judged:
    """A model as the judge sees it: shares of rude and correct sampled answers, KL per token from the start."""

    rude_rate: float
    correct_rate: float
    wrong_rate: float
    kl: float


def judge_against(model: GPT, start: GPT, tokenizer: Tokenizer, questions: Sequence[Question], samples: int = 2,
                  seed: int = 0) -> Judged:
    """``samples`` answers per test question judged, and the KL from ``start`` (0 when ``model`` is ``start``)."""
    rates = judge_model(model, tokenizer, questions, samples, seed)
    kl = 0.0 if model is start else kl_from_reference(model, start, tokenizer,
                                                        [q for q in questions for _ in range(samples)], seed + 1)
    return Judged(rates["rude_rate"], rates["correct_rate"], rates["wrong_rate"], kl)


@dataclass
class ChatRun:
    """Everything one run of the lesson made and measured, with the seconds each stage took."""

    start: GPT
    tokenizer: Tokenizer
    comparisons: list[Comparison]
    held_out: list[Comparison]
    reward_model: RewardModel
    reward_model_accuracy: float
    accuracy_by_kind: dict[str, tuple[float, int]]
    rlhf_policy: GPT
    rlhf_history: RLHFHistory
    rlvr_policy: GPT
    rlvr_history: RLHFHistory
    dpo_policy: GPT
    before: Judged
    after_rlhf: Judged
    after_rlvr: Judged
    after_dpo: Judged
    seconds: dict[str, float] = field(default_factory=dict)


def accuracy_on(by_kind: dict[str, tuple[float, int]], kinds: Sequence[str]) -> float:
    """The accuracy on the comparisons of ``kinds`` together, from ``accuracy_by_kind``'s table; NaN if none."""
    right = sum(accuracy * count for kind, (accuracy, count) in by_kind.items() if kind in kinds)
    total = sum(count for kind, (_, count) in by_kind.items() if kind in kinds)
    return right / total if total else float("nan")


def run_chat(n_comparisons: int = CHAT_COMPARISONS, questions: ChatQuestions | None = None,
             noise: float = LABEL_NOISE, reward_recipe: RewardRecipe = REWARD_RECIPE,
             rlhf_recipe: RLHFRecipe = RLHF_RECIPE, dpo_recipe: DPORecipe = DPO_RECIPE, judge_samples: int = 2,
             held_out: int = HELD_OUT_COMPARISONS, seed: int = 0, progress: bool = False,
             directory: Path = CHECKPOINT_DIR) -> ChatRun:
    """The lesson from the shipped ``chat-sft``: comparisons, reward model, RLHF, RLVR, DPO, each judged exactly.

    RLVR uses ``rlhf_recipe`` too: the same steps, batches, learning rate and KL leash, only the reward differs.
    """
    check_positive_int("n_comparisons", n_comparisons)
    check_positive_int("held_out", held_out)
    check_positive_int("judge_samples", judge_samples)
    check_share("noise", noise)
    questions = questions or ChatQuestions.build(seed=seed)
    seconds, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    loaded = load_chat_checkpoint("chat-sft", directory=directory)
    start, tokenizer = loaded.model, loaded.tokenizer
    before = judge_against(start, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_before")
    pairs = collect_comparisons(start, tokenizer, questions.labelling, n_comparisons + held_out, noise, seed)
    comparisons, held = pairs[:n_comparisons], pairs[n_comparisons:]
    lap("comparisons")
    reward_model, _ = train_reward_model(start, tokenizer, comparisons, reward_recipe, progress)
    accuracy, by_kind = reward_accuracy(reward_model, tokenizer, held), accuracy_by_kind(reward_model, tokenizer, held)
    lap("reward_model")
    policy, history = rlhf(start, reward_model, tokenizer, questions.practice, rlhf_recipe, progress)
    lap("rlhf")
    after_rlhf = judge_against(policy, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_rlhf")
    rlvr_policy, rlvr_history = rlvr(start, tokenizer, questions.practice, rlhf_recipe, progress)
    lap("rlvr")
    after_rlvr = judge_against(rlvr_policy, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_rlvr")
    dpo_policy, _ = dpo(start, tokenizer, comparisons, dpo_recipe, progress)
    lap("dpo")
    after_dpo = judge_against(dpo_policy, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_dpo")
    return ChatRun(start, tokenizer, comparisons, held, reward_model, accuracy, by_kind, policy, history,
                   rlvr_policy, rlvr_history, dpo_policy, before, after_rlhf, after_rlvr, after_dpo, seconds)


# The kinds of held-out comparison: the two answers differ in politeness (one is rude), or both are polite
# and only one is correct.
STYLE_KINDS = ("correct>rude", "wrong>rude")
CORRECTNESS_KINDS = ("correct>wrong",)

CHAT_TABLE_KEYS = ("comparisons", "reward_model_accuracy", "reward_model_accuracy_style",
                   "reward_model_accuracy_correctness", "rude_rate_before", "correct_rate_before",
                   "rude_rate_rlhf", "correct_rate_rlhf", "kl_rlhf", "rude_rate_rlvr", "correct_rate_rlvr", "kl_rlvr",
                   "rude_rate_dpo", "correct_rate_dpo", "kl_dpo")


def chat_table(n_comparisons: int = CHAT_COMPARISONS, questions: ChatQuestions | None = None, seed: int = 0,
               directory: Path = CHECKPOINT_DIR, **settings) -> dict[str, float]:
    """``course bench``'s ``chat``: the figures of ``run_chat``, keys ``CHAT_TABLE_KEYS``.

    reward_model_accuracy is measured on held-out comparisons against the
    judge's noise-free order, ``_style`` on those whose answers differ in
    politeness, ``_correctness`` on those where both are polite and one is
    correct; the rates are shares of sampled answers to the test questions;
    kl_* are KL divergences per answer token from the starting model, in
    nats (one-sample estimates). ``settings`` go to ``run_chat``.
    """
    return chat_table_of(run_chat(n_comparisons, questions, seed=seed, directory=directory, **settings))


def chat_table_of(run: ChatRun) -> dict[str, float]:
    """The bench figures of a finished ``run_chat``."""
    table = {"comparisons": len(run.comparisons), "reward_model_accuracy": run.reward_model_accuracy,
             "reward_model_accuracy_style": accuracy_on(run.accuracy_by_kind, STYLE_KINDS),
             "reward_model_accuracy_correctness": accuracy_on(run.accuracy_by_kind, CORRECTNESS_KINDS),
             "rude_rate_before": run.before.rude_rate, "correct_rate_before": run.before.correct_rate}
    for name, judged in (("rlhf", run.after_rlhf), ("rlvr", run.after_rlvr), ("dpo", run.after_dpo)):
        table.update({f"rude_rate_{name}": judged.rude_rate, f"correct_rate_{name}": judged.correct_rate,
                      f"kl_{name}": judged.kl})
    return table


# ---------------------------------------------------------------------------
# The shipped checkpoints: `course pretrain chat-sft | chat-reward`
# ---------------------------------------------------------------------------


def remake_checkpoint(name: str, steps: int | None = None, progress: bool = True,
                      directory: Path = CHECKPOINT_DIR) -> Pretrained:
    """Make ``chat-sft`` (from tiny-gpt) or ``chat-reward`` (from the shipped chat-sft) again and save it.

    steps: optimizer steps instead of the recipe's (``SFTRecipe.steps``, or the reward model's epochs).
    """
    if name == "chat-sft":
        recipe = CHAT_SFT_RECIPE if steps is None else replace(CHAT_SFT_RECIPE, steps=steps)
        return make_chat_sft(recipe, progress=progress, directory=directory)
    if name != "chat-reward":
        raise ValueError(f"name must be one of {CHAT_CHECKPOINTS}, got {name!r}")
    questions = ChatQuestions.build()
    loaded = load_chat_checkpoint("chat-sft", directory=directory)
    pairs = collect_comparisons(loaded.model, loaded.tokenizer, questions.labelling,
                                CHAT_COMPARISONS + HELD_OUT_COMPARISONS)
    recipe = REWARD_RECIPE if steps is None else replace(REWARD_RECIPE, epochs=1, min_steps=steps)
    model, history = train_reward_model(loaded.model, loaded.tokenizer, pairs[:CHAT_COMPARISONS], recipe, progress)
    metrics = {"comparisons": CHAT_COMPARISONS, "train_seconds": round(history.seconds, 1),
               "reward_model_accuracy": reward_accuracy(model, loaded.tokenizer, pairs[CHAT_COMPARISONS:])}
    save_reward_model(model, loaded.tokenizer, metrics, {"reward": asdict(recipe)}, directory)
    return load_reward_model(directory)
