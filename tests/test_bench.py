"""`course bench`: the references match our models' size, and every figure is reported."""
import pytest
import torch

from course_lib.tools import bench
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


@pytest.mark.slow
def test_bench_reports_every_figure():
    measured = ("gpt", "bert", "generation", "finetune")  # qa, sft, chat: their tables are tested where they live
    results = run_bench(n_stories=3000, steps=6, throughput_steps=3, generation_len=24, n_samples=10, n_labels=8,
                        recipe_steps=2, sections=measured)
    assert list(results) == list(measured)
    assert set(results["gpt"]) >= {"train_tokens_per_s", "reference_train_tokens_per_s", "throughput_ratio",
                                   "val_loss", "entropy_floor", "loss_over_floor", "train_seconds",
                                   "valid_story_rate", "vs_nanogpt_recipe_tokens_per_s", "matmul_peak_fraction"}
    assert set(results["bert"]) >= {"train_tokens_per_s", "reference_train_tokens_per_s", "throughput_ratio",
                                    "masked_accuracy", "pronoun_accuracy"}
    assert set(results["generation"]) >= {"tokens_per_s_cache", "tokens_per_s_no_cache", "speedup",
                                          "tiny_gpt_tokens_per_s"}
    assert 0 < results["gpt"]["matmul_peak_fraction"] < 1
    assert set(results["finetune"]) == {"n_labels", "pretrained_full", "pretrained_frozen", "scratch",
                                        "transfer_gain", "gpt_task_only", "gpt_task_plus_lm", "prompt_full"}
    finetune = results["finetune"]
    assert finetune["n_labels"] == 8
    assert all(0 <= finetune[name] <= 1 for name in ("pretrained_full", "pretrained_frozen", "scratch",
                                                      "gpt_task_only", "gpt_task_plus_lm", "prompt_full"))
    gpt, bert = results["gpt"], results["bert"]
    assert gpt["train_steps"] == bert["train_steps"] == 6
    # The floor on these few validation stories is near the exact 0.6105 nats (bits would give 0.88),
    # and a 6-step model is far above it: no evaluation may beat the floor.
    assert gpt["entropy_floor"] == pytest.approx(0.6105, abs=0.01)
    assert gpt["val_loss"] > 1.5 * gpt["entropy_floor"]
    assert 0 <= gpt["valid_story_rate"] <= 1 and 0 <= bert["pronoun_accuracy"] <= 1
    assert results["generation"]["same_tokens"] and results["generation"]["generated_tokens"] == 23


def test_generation_speed_writes_the_same_tokens_with_and_without_the_cache():
    speed = generation_speed(max_len=32, repeats=1)
    assert speed["same_tokens"]
    assert speed["generated_tokens"] == 31
    assert speed["tokens_per_s_cache"] > 0 and speed["tokens_per_s_no_cache"] > 0


def test_the_fine_tuning_sections_call_their_tables_with_the_bench_sizes(monkeypatch):
    calls = {}

    def stand_in(section):
        def table(size):
            calls[section] = size
            return {section: size}
        return table

    for section in ("qa", "sft", "chat"):
        monkeypatch.setattr(bench, f"{section}_table", stand_in(section))
    results = run_bench(qa_labels=11, sft_examples=12, chat_comparisons=13, sections=("qa", "sft", "chat"))
    assert calls == {"qa": 11, "sft": 12, "chat": 13}
    assert results == {"qa": {"qa": 11}, "sft": {"sft": 12}, "chat": {"chat": 13}}


def test_bench_runs_only_the_sections_asked_for():
    assert list(run_bench(generation_len=12, sections=("generation",))) == ["generation"]
    with pytest.raises(ValueError, match="sections must be some of"):
        run_bench(sections=("speed",))


def test_a_training_steps_operations_are_counted_as_in_palm():
    config = TransformerConfig(vocab_size=10, max_len=8, d_model=4, n_heads=2, n_layers=3, d_ff=16)
    # Per layer: Wq, Wk, Wv, Wo (4 * 4 * 4) and the feed-forward's two (2 * 4 * 16); the LM head 10 * 4.
    weights = 3 * (64 + 128) + 40
    per_token = 6 * weights + 12 * 3 * 8 * 4
    assert bench.training_step_flops(config, batch_size=5, T=8) == per_token * 5 * 8


def test_the_matmul_peak_is_a_plausible_speed():
    assert 1e8 < bench.matmul_peak(n=128, repeats=2) < 1e14  # FLOP/s: a CPU core does billions
