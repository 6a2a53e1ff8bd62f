"""The shipped chat-sft and chat-reward load strictly into today's classes and still do what their metrics say."""
import pytest

from course_lib.hub import CHECKPOINT_DIR
from course_lib.lab.chat.data import RUDE_ANSWER, chat_questions, judge_model
from course_lib.lab.chat.sft import load_chat_checkpoint
from course_lib.lab.asking.questions import QuestionData
from course_lib.lab.chat.reward_model import load_reward_model, rewards
from course_lib.tools.cli import build_parser

pytestmark = pytest.mark.skipif(not (CHECKPOINT_DIR / "chat-sft" / "model.pt").exists(), reason="chat-sft not made")


@pytest.fixture(scope="module")
def test_questions():
    return chat_questions(QuestionData.build(seed=0).test)


def test_chat_sft_reproduces_its_recorded_rates(test_questions):
    start = load_chat_checkpoint("chat-sft")
    assert start.model.config.vocab_size == start.tokenizer.vocab_size
    rates = judge_model(start.model, start.tokenizer, test_questions, samples=2, seed=0)
    for key in ("rude_rate", "correct_rate", "wrong_rate"):
        assert rates[key] == pytest.approx(start.metrics[key], abs=0.01), key
    assert rates["rude_rate"] >= 0.10  # the flaw the lesson removes


@pytest.mark.skipif(not (CHECKPOINT_DIR / "chat-reward" / "model.pt").exists(), reason="chat-reward not made")
def test_chat_reward_scores_the_rude_answer_below_the_true_one(test_questions):
    reward = load_reward_model()
    questions = test_questions[:50]
    true = rewards(reward.model, reward.tokenizer, questions, [(*q.answer_tokens, ".") for q in questions])
    rude = rewards(reward.model, reward.tokenizer, questions, [(*RUDE_ANSWER, ".")] * len(questions))
    assert (true > rude).all()


def test_course_pretrain_can_remake_the_chat_checkpoints():
    for name in ("chat-sft", "chat-reward"):
        assert build_parser().parse_args(["pretrain", name]).name == name
