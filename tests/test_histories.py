"""The shipped training histories (notebooks 05 and 06): their contents, and recording one."""
import json

import pytest

from course_lib.lab.histories import EVERY, RUNS, first_step_reaching, load_history, record_history
from course_lib.training import History


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_run_is_shipped_measured_every_hundred_steps(name):
    history = load_history(name)
    assert isinstance(history, History)
    assert history.eval_steps == list(range(EVERY, 3001, EVERY))
    assert len(history.train_loss) == 3000 and history.steps[-1] == 3000
    for values in history.eval_metrics.values():
        assert len(values) == len(history.eval_steps)


def test_the_histories_show_what_the_notebooks_say():
    shipped, too_fast = load_history("tiny-bert"), load_history("tiny-bert-lr-0.006")
    # Pronoun agreement comes late and suddenly at 0.002; at 0.006 it stalls for 2,000 steps and comes later.
    assert max(shipped.eval_metrics["pronoun_accuracy"][:10]) < 0.6
    assert shipped.eval_metrics["pronoun_accuracy"][-1] > 0.95
    assert max(too_fast.eval_metrics["pronoun_accuracy"][:20]) < 0.6
    assert first_step_reaching(too_fast, "pronoun_accuracy", 0.9) > first_step_reaching(shipped, "pronoun_accuracy", 0.9)
    gpt = load_history("tiny-gpt")
    assert gpt.eval_metrics["valid_story_rate"][-1] > 0.9
    assert set(gpt.eval_metrics) == {"val_loss", "valid_story_rate", "wrong_gender_share"}


def test_first_step_reaching():
    history = History(eval_steps=[100, 200, 300], eval_metrics={"accuracy": [0.4, 0.8, 0.9]})
    assert first_step_reaching(history, "accuracy", 0.75) == 200
    assert first_step_reaching(history, "accuracy", 0.95) is None


def test_record_history_writes_what_load_history_reads(tmp_path):
    path = record_history("tiny-bert", tmp_path, progress=False, steps=4, every=2)
    recorded = json.loads(path.read_text())
    assert recorded["eval_steps"] == [2, 4] and len(recorded["train_loss"]) == 4
    assert set(recorded["eval_metrics"]) == {"masked_accuracy", "pronoun_accuracy"}
    assert load_history("tiny-bert", tmp_path).eval_steps == [2, 4]
    with pytest.raises(ValueError, match="name must be one of"):
        record_history("tiny-t5", tmp_path)
