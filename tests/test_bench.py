"""`course bench`: the references match our models' size, and every figure is reported."""
import pytest
import torch

from course_lib.tools.bench import ReferenceBERT, ReferenceGPT, generation_speed, run_bench
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.utils import count_parameters


@pytest.mark.parametrize("ours, reference", [(GPT, ReferenceGPT), (BERT, ReferenceBERT)])
def test_references_have_identical_size_and_shapes(ours, reference):
    config = TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_heads=4, n_layers=2, d_ff=64)
    ours_model, reference_model = ours(config), reference(config)
    assert count_parameters(ours_model) == count_parameters(reference_model)
    ids = torch.randint(0, 50, (2, 10))
    args = (ids,) if ours is GPT else (ids, torch.ones_like(ids, dtype=torch.bool))
    assert ours_model(*args).shape == reference_model(*args).shape == (2, 10, 50)


def test_reference_gpt_is_causal():
    model = ReferenceGPT(TransformerConfig(vocab_size=50, max_len=16, d_model=32, n_heads=4, n_layers=2,
                                           d_ff=64, dropout=0.0)).eval()
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50
    torch.testing.assert_close(model(ids)[:, :-1], model(changed)[:, :-1])


def test_bench_reports_every_figure():
    results = run_bench(n_stories=3000, steps=6, throughput_steps=3, generation_len=24, n_samples=10, n_labels=8)
    assert set(results["gpt"]) >= {"train_tokens_per_s", "reference_train_tokens_per_s", "throughput_ratio",
                                   "val_loss", "entropy_floor", "loss_over_floor", "train_seconds",
                                   "valid_story_rate"}
    assert set(results["bert"]) >= {"train_tokens_per_s", "reference_train_tokens_per_s", "throughput_ratio",
                                    "masked_accuracy", "pronoun_accuracy"}
    assert set(results["generation"]) >= {"tokens_per_s_cache", "tokens_per_s_no_cache", "speedup"}
    assert set(results["finetune"]) == {"n_labels", "pretrained_full", "pretrained_frozen", "scratch",
                                        "transfer_gain", "gpt_task_only", "gpt_task_plus_lm"}
    finetune = results["finetune"]
    assert finetune["n_labels"] == 8
    assert finetune["transfer_gain"] == pytest.approx(finetune["pretrained_full"] - finetune["scratch"])
    gpt = results["gpt"]
    assert gpt["throughput_ratio"] == pytest.approx(gpt["train_tokens_per_s"] / gpt["reference_train_tokens_per_s"])
    assert gpt["loss_over_floor"] == pytest.approx(gpt["val_loss"] / gpt["entropy_floor"])
    assert 0 <= gpt["valid_story_rate"] <= 1 and 0 <= results["bert"]["pronoun_accuracy"] <= 1


def test_generation_speed_compares_cache_and_no_cache():
    speed = generation_speed(max_len=32, repeats=1)
    assert speed["speedup"] == pytest.approx(speed["tokens_per_s_cache"] / speed["tokens_per_s_no_cache"])
    assert speed["generated_tokens"] == 31
