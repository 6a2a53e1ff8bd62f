"""From GPT to ChatGPT, the whole lesson in one place: the flawed model, preferences, RLHF and DPO (notebook 10).

=================  ==========================================================
``chat_data``      the rude answers, sampling, the exact judge, comparisons
``chat_sft``       the starting model (``chat-sft``) and the chat checkpoints
``reward_model``   GPT's body + a scalar head, Bradley–Terry on comparisons
``rlhf``           REINFORCE with a baseline and a KL penalty to the start
``dpo``            the same comparisons, no reward model, no sampling
=================  ==========================================================

Every model is judged the same way: answers to the test questions sampled at
temperature 1 (the rude habit is a share of samples, which greedy decoding
would hide), each called rude, correct or wrong by the exact judge, never
by the reward model; and its KL from the starting model per answer token
(``data.kl_from_reference``). ``chat_table`` is ``course bench``'s ``chat``.

The questions of each stage are disjoint: the starting model was fine-tuned
on the first questions of the pool, the labellers compare answers to the
next ones, RLHF practises on the ones after; the test questions only measure.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from course_lib.hub import CHECKPOINT_DIR, Pretrained
from course_lib.lab.chat.data import LABEL_NOISE, Comparison, chat_questions, check_share, collect_comparisons, \
    judge_model, kl_from_reference, sample_answers
from course_lib.lab.chat.sft import CHAT_CHECKPOINTS, CHAT_SFT_RECIPE, load_chat_checkpoint, make_chat_sft
from course_lib.lab.chat.dpo import DPO_RECIPE, DPORecipe, dpo
from course_lib.lab.asking.questions import Question, QuestionData
from course_lib.lab.chat.reward_model import REWARD_RECIPE, RewardModel, RewardRecipe, load_reward_model, \
    reward_accuracy, save_reward_model, train_reward_model
from course_lib.lab.chat.rlhf import RLHF_RECIPE, RLHFHistory, RLHFRecipe, rlhf
from course_lib.models import GPT
from course_lib.tokenizer import Tokenizer
from course_lib.utils import check_positive_int

# The bench's number of comparisons, and the held-out comparisons the reward model's accuracy is measured on.
CHAT_COMPARISONS = 2000
HELD_OUT_COMPARISONS = 500
# The questions RLHF practises on.
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
    rlhf_policy: GPT
    rlhf_history: RLHFHistory
    dpo_policy: GPT
    before: Judged
    after_rlhf: Judged
    after_dpo: Judged
    seconds: dict[str, float] = field(default_factory=dict)


def run_chat(n_comparisons: int = CHAT_COMPARISONS, questions: ChatQuestions | None = None,
             noise: float = LABEL_NOISE, reward_recipe: RewardRecipe = REWARD_RECIPE,
             rlhf_recipe: RLHFRecipe = RLHF_RECIPE, dpo_recipe: DPORecipe = DPO_RECIPE, judge_samples: int = 2,
             held_out: int = HELD_OUT_COMPARISONS, seed: int = 0, progress: bool = False,
             directory: Path = CHECKPOINT_DIR) -> ChatRun:
    """The lesson from the shipped ``chat-sft``: comparisons, reward model, RLHF, DPO, each judged exactly."""
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
    accuracy = reward_accuracy(reward_model, tokenizer, held)
    lap("reward_model")
    policy, history = rlhf(start, reward_model, tokenizer, questions.practice, rlhf_recipe, progress)
    lap("rlhf")
    after_rlhf = judge_against(policy, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_rlhf")
    dpo_policy, _ = dpo(start, tokenizer, comparisons, dpo_recipe, progress)
    lap("dpo")
    after_dpo = judge_against(dpo_policy, start, tokenizer, questions.test, judge_samples, seed)
    lap("judge_dpo")
    return ChatRun(start, tokenizer, comparisons, held, reward_model, accuracy, policy, history, dpo_policy,
                   before, after_rlhf, after_dpo, seconds)


CHAT_TABLE_KEYS = ("comparisons", "reward_model_accuracy", "rude_rate_before", "correct_rate_before",
                   "rude_rate_rlhf", "correct_rate_rlhf", "kl_rlhf", "rude_rate_dpo", "correct_rate_dpo", "kl_dpo")


def chat_table(n_comparisons: int = CHAT_COMPARISONS, questions: ChatQuestions | None = None, seed: int = 0,
               directory: Path = CHECKPOINT_DIR, **settings) -> dict[str, float]:
    """``course bench``'s ``chat``: the figures of ``run_chat``, keys ``CHAT_TABLE_KEYS``.

    reward_model_accuracy is measured on held-out comparisons against the
    judge's noise-free order; the rates are shares of sampled answers to the
    test questions; kl_* are KL divergences per answer token from the
    starting model, in nats. ``settings`` go to ``run_chat``.
    """
    return chat_table_of(run_chat(n_comparisons, questions, seed=seed, directory=directory, **settings))


def chat_table_of(run: ChatRun) -> dict[str, float]:
    """The bench figures of a finished ``run_chat``."""
    return {"comparisons": len(run.comparisons), "reward_model_accuracy": run.reward_model_accuracy,
            "rude_rate_before": run.before.rude_rate, "correct_rate_before": run.before.correct_rate,
            "rude_rate_rlhf": run.after_rlhf.rude_rate, "correct_rate_rlhf": run.after_rlhf.correct_rate,
            "kl_rlhf": run.after_rlhf.kl, "rude_rate_dpo": run.after_dpo.rude_rate,
            "correct_rate_dpo": run.after_dpo.correct_rate, "kl_dpo": run.after_dpo.kl}


# ---------------------------------------------------------------------------
# What goes wrong: RLHF off the leash, and a reward model from too few comparisons
# ---------------------------------------------------------------------------


@dataclass
class Experiment:
    """One RLHF variant: its policy, its history step by step, how the judge sees it, a few of its answers."""

    name: str
    policy: GPT
    history: RLHFHistory
    judged: Judged
    reward_model_accuracy: float
    examples: list[tuple[str, str]]


def rlhf_experiment(name: str, run: ChatRun, questions: ChatQuestions, recipe: RLHFRecipe = RLHF_RECIPE,
                    reward_model: RewardModel | None = None, reward_model_accuracy: float | None = None,
                    judge_samples: int = 2, n_examples: int = 8, seed: int = 0) -> Experiment:
    """RLHF from ``run``'s starting model with another ``recipe`` or ``reward_model``, judged like the others.

    ``examples`` are (question, sampled answer) pairs of the test questions, as text.
    """
    reward_model = reward_model or run.reward_model
    accuracy = run.reward_model_accuracy if reward_model_accuracy is None else reward_model_accuracy
    policy, history = rlhf(run.start, reward_model, run.tokenizer, questions.practice, recipe)
    judged = judge_against(policy, run.start, run.tokenizer, questions.test, judge_samples, seed)
    shown = questions.test[:n_examples]
    answers = sample_answers(policy, run.tokenizer, shown, seed=seed)
    return Experiment(name, policy, history, judged, accuracy,
                      [(q.text, " ".join(a)) for q, a in zip(shown, answers)])


def without_kl_penalty(run: ChatRun, questions: ChatQuestions, recipe: RLHFRecipe = RLHF_RECIPE,
                       **options) -> Experiment:
    """The same RLHF with β = 0: nothing holds the policy near the starting model."""
    return rlhf_experiment("no KL penalty", run, questions, replace(recipe, kl_coef=0.0), **options)


def with_few_comparisons(run: ChatRun, questions: ChatQuestions, n_comparisons: int = 50,
                         recipe: RLHFRecipe = RLHF_RECIPE, reward_recipe: RewardRecipe = REWARD_RECIPE,
                         **options) -> Experiment:
    """RLHF towards a reward model trained on the first ``n_comparisons`` of ``run``'s comparisons only."""
    check_positive_int("n_comparisons", n_comparisons)
    if n_comparisons > len(run.comparisons):
        raise ValueError(f"n_comparisons must be at most the run's {len(run.comparisons)}, got {n_comparisons}")
    reward_model, _ = train_reward_model(run.start, run.tokenizer, run.comparisons[:n_comparisons], reward_recipe)
    accuracy = reward_accuracy(reward_model, run.tokenizer, run.held_out)
    return rlhf_experiment(f"{n_comparisons} comparisons", run, questions, recipe, reward_model, accuracy, **options)


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


# ---------------------------------------------------------------------------
# The results notebook 10 plots: `python -m course_lib.lab.chat.pipeline`
# ---------------------------------------------------------------------------

RESULTS_FILE = Path(__file__).parents[1] / "results" / "10_chat.json"


def _judged(judged: Judged) -> dict[str, float]:
    return {key: round(value, 4) for key, value in asdict(judged).items()}


def _history(history: RLHFHistory) -> dict[str, list[float]]:
    return {key: [round(v, 4) for v in getattr(history, key)] for key in ("reward", "kl", "rude_rate", "correct_rate")}


def write_results(path: Path = RESULTS_FILE, directory: Path = CHECKPOINT_DIR, save_reward: bool = True) -> dict:
    """Run the lesson and both failure experiments; write what notebook 10 plots as JSON (and ship chat-reward)."""
    import json

    questions = ChatQuestions.build()
    run = run_chat(questions=questions, directory=directory)
    experiments = [without_kl_penalty(run, questions), with_few_comparisons(run, questions)]
    results = {"table": chat_table_of(run), "seconds": run.seconds,
               "rlhf": {"history": _history(run.rlhf_history), "seconds": round(run.rlhf_history.seconds, 1)},
               "experiments": [{"name": e.name, "judged": _judged(e.judged),
                                "reward_model_accuracy": round(e.reward_model_accuracy, 4),
                                "history": _history(e.history), "examples": e.examples} for e in experiments]}
    Path(path).write_text(json.dumps(results, indent=1) + "\n")
    if save_reward:
        save_reward_model(run.reward_model, run.tokenizer,
                          {"comparisons": len(run.comparisons), "reward_model_accuracy": run.reward_model_accuracy},
                          {"reward": asdict(REWARD_RECIPE), "comparisons": CHAT_COMPARISONS,
                           "held_out": HELD_OUT_COMPARISONS}, directory)
    return results


def load_results(path: Path = RESULTS_FILE) -> dict:
    """The shipped results of ``write_results`` (``python -m course_lib.lab.chat.pipeline`` makes them again)."""
    import json

    if not Path(path).exists():
        raise FileNotFoundError(f"no results at {path}; make them with `python -m course_lib.lab.chat.pipeline`")
    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    print(write_results()["table"])
