"""``course bench``: the course's performance figures, measured on this machine.

* Training throughput of our GPT and BERT against references of identical
  size built from PyTorch's ``nn.TransformerEncoderLayer``, trained on the
  same batches in the same process, interleaved step by step so that both
  see the same machine load.
* GPT trained at the notebook's settings: validation loss against the
  entropy floor, and the share of generated stories the grammar accepts.
* BERT trained with the shipped checkpoint's recipe (pronoun agreement is
  learned after about 2,000 steps, later than the notebook's live run ends):
  masked-token and pronoun accuracy.
* The course's GPT at nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide,
  context 64, batch 12, dropout 0: a configuration of our own model; nanoGPT's
  code is not part of the course), and the share of the machine's float32
  matrix-multiply peak its training step reaches.
* Generation speed with and without the key/value cache, and the shipped
  tiny GPT writing greedily at batch size 1.
* Fine-tuning the shipped checkpoints on the coherence task with 256 labels
  (``finetuning.finetune_table``), and through BERT's masked-LM head
  (``asking.prompting.prompt_full``).
* Notebook 09's ways of asking: BERT's extractive question answering
  (``asking.qa.qa_table``) and GPT's instruction tuning (``asking.instruction.sft_table``).
* Notebook 10's alignment: the flawed starting model, the reward model, RLHF,
  RLVR (the same loop rewarded by the exact judge) and DPO, each judged
  exactly (``chat.pipeline.chat_table``).
* A live-training lesson on an idle machine and beside a busy program
  (``contention.contention_table``): its time and the share of its planned
  steps it reaches.

Every measurement runs under the course's thread policy (``threads``), as
a notebook would. ``compile=True`` (``course bench --compile``) trains the
models of the throughput figures through ``torch.compile``.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.lab.chat.pipeline import CHAT_COMPARISONS, chat_table
from course_lib.lab.finetuning import finetune_table
from course_lib.lab.asking.instruction import SFT_BENCH_EXAMPLES, sft_table
from course_lib.lab.asking.prompting import prompt_full
from course_lib.lab.asking.qa import QA_BENCH_LABELS, qa_table
from course_lib.generation import generate
from course_lib.hub import load_pretrained
from course_lib.models import BERT, GPT, TransformerConfig
from course_lib.threads import use_fair_threads
from course_lib.tools.contention import contention_table
from course_lib.lab.pretraining import (
    MODEL_SIZE, NOTEBOOK_MAX_SECONDS, StoryData, bert_loss_fn, checkpoint_train_config, evaluate_bert,
    evaluate_gpt, family_train_config, gpt_loss, model_config, notebook_train_config, pretrain_bert, pretrain_gpt,
)
from course_lib.training import TrainConfig, make_optimizer


class _ReferenceBody(nn.Module):
    """Embeddings and PyTorch's own encoder stack, sized like ``TransformerBody``."""

    def __init__(self, config: TransformerConfig, norm_first: bool):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.embedding_norm = nn.Identity() if norm_first else nn.LayerNorm(config.d_model)
        layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.d_model) if norm_first else nn.Identity()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.embedding_norm(self.token_embedding(input_ids) + self.position_embedding(positions))


class ReferenceGPT(_ReferenceBody):
    """GPT's size and layout from ``nn.TransformerEncoderLayer`` with a causal mask."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config, norm_first=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=input_ids.device)
        hidden = self.encoder(self.embed(input_ids), mask=causal, is_causal=True)
        return self.lm_head(self.final_norm(hidden))


class ReferenceBERT(_ReferenceBody):
    """BERT's size and layout from ``nn.TransformerEncoderLayer`` (post-norm, padding mask)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config, norm_first=False)
        self.segment_embedding = nn.Embedding(config.n_segments, config.d_model)
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.head_norm = nn.LayerNorm(config.d_model)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.segment_embedding(torch.zeros_like(input_ids))
        hidden = self.encoder(x, src_key_padding_mask=~attention_mask.bool())  # PyTorch: True = ignore
        hidden = self.head_norm(nn.functional.gelu(self.dense(hidden)))
        return hidden @ self.token_embedding.weight.T + self.bias


def interleaved_throughput(ours: nn.Module, reference: nn.Module, batches, loss_ours: Callable,
                           loss_reference: Callable, steps: int = 40, warmup: int = 5) -> tuple[float, float]:
    """Training tokens per second of both models, stepping them in turn on the same batches.

    The order alternates every step, so neither model always runs right
    after the other's cache-warming or memory churn.
    """
    settings = notebook_train_config("gpt")  # the same optimizer settings for both models
    optimizers = {id(ours): make_optimizer(ours, settings), id(reference): make_optimizer(reference, settings)}
    seconds = {id(ours): 0.0, id(reference): 0.0}
    tokens = 0
    ours.train()
    reference.train()
    for step in range(warmup + steps):
        batch = next(batches)
        pair = [(ours, loss_ours), (reference, loss_reference)]
        for model, loss_fn in (pair if step % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            loss = loss_fn(model, batch)
            optimizers[id(model)].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[id(model)].step()
            if step >= warmup:
                seconds[id(model)] += time.perf_counter() - start
        if step >= warmup:
            tokens += int(batch[1].sum())
    return tokens / seconds[id(ours)], tokens / seconds[id(reference)]


# The batches of the throughput comparisons: 64 stories, the shipped checkpoints' recipe.
THROUGHPUT_BATCH_SIZE = 64


def compiled(model: nn.Module, compile: bool) -> nn.Module:
    """``torch.compile(model)`` when asked: the same weights, run through PyTorch's compiler."""
    return torch.compile(model) if compile else model


def bench_gpt(data: StoryData, train_config: TrainConfig, throughput_steps: int = 40,
              n_samples: int = 500, recipe_steps: int = 30, compile: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    config = model_config(data.tokenizer)
    ours_tps, reference_tps = interleaved_throughput(
        compiled(GPT(config), compile), compiled(ReferenceGPT(config), compile),
        data.batches(THROUGHPUT_BATCH_SIZE, seed=1), gpt_loss, gpt_loss, steps=throughput_steps)
    recipe = nanogpt_recipe_speed(recipe_steps, compile=compile)
    model, history = pretrain_gpt(data, train_config, progress=False, max_seconds=NOTEBOOK_MAX_SECONDS)
    metrics = evaluate_gpt(model, data, n_samples)
    return {"train_tokens_per_s": ours_tps, "reference_train_tokens_per_s": reference_tps,
            "throughput_ratio": ours_tps / reference_tps, **recipe, **metrics, "train_seconds": history.seconds,
            "train_steps": len(history.steps)}


# nanoGPT's CPU recipe (its README: 4 layers, 4 heads, 128 wide, context 64, batch 12, dropout 0) written as
# a configuration of the course's GPT; the vocabulary is its Shakespeare characters'.
NANOGPT_RECIPE = TransformerConfig(vocab_size=65, max_len=64, d_model=128, n_heads=4, n_layers=4, d_ff=512,
                                   dropout=0.0)
NANOGPT_BATCH_SIZE = 12


def training_step_flops(config: TransformerConfig, batch_size: int, T: int) -> float:
    """Floating-point operations of one training step on (batch_size, T) tokens, counted as in PaLM (appendix B).

    Every weight of a matrix product costs 2 operations per token forward and 4 backward: 6 per token. The
    attention scores and their weighted sum add 12 * n_layers * T * d_model per token (forward and backward).
    Embedding lookups, norms and activations are left out: they are not matrix products.
    """
    d, L = config.d_model, config.n_layers
    matrix_weights = L * (4 * d * d + 2 * d * config.d_ff) + config.vocab_size * d  # blocks, then the LM head
    return (6 * matrix_weights + 12 * L * T * d) * batch_size * T


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply speed in FLOP/s: the best of ``repeats`` (n, n) @ (n, n) products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # the first product pays for one-time setup
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        timings.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(timings)


def nanogpt_recipe_speed(steps: int = 30, warmup: int = 5, compile: bool = False) -> dict[str, float]:
    """Training tokens per second of the course's GPT at nanoGPT's recipe, and its share of the matmul peak."""
    torch.manual_seed(0)
    config, T = NANOGPT_RECIPE, NANOGPT_RECIPE.max_len
    model = GPT(config)
    forward = compiled(model, compile)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-3))
    generator = torch.Generator().manual_seed(0)
    timings = []
    for step in range(warmup + steps):
        tokens = torch.randint(0, config.vocab_size, (NANOGPT_BATCH_SIZE, T + 1), generator=generator)
        start = time.perf_counter()
        logits = forward(tokens[:, :-1])  # (B, T, vocab_size)
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    peak = matmul_peak()
    return {"vs_nanogpt_recipe_tokens_per_s": NANOGPT_BATCH_SIZE * T / seconds,
            "matmul_peak_gflops": peak / 1e9,
            "matmul_peak_fraction": training_step_flops(config, NANOGPT_BATCH_SIZE, T) / seconds / peak}


def bench_bert(data: StoryData, train_config: TrainConfig, throughput_steps: int = 40,
               compile: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    config = model_config(data.tokenizer)
    loss = bert_loss_fn(data.tokenizer, seed=0)  # one generator: each model gets fresh masks of the same recipe
    ours_tps, reference_tps = interleaved_throughput(
        compiled(BERT(config), compile), compiled(ReferenceBERT(config), compile),
        data.batches(THROUGHPUT_BATCH_SIZE, seed=1), loss, loss, steps=throughput_steps)
    model, history = pretrain_bert(data, train_config, progress=False)
    return {"train_tokens_per_s": ours_tps, "reference_train_tokens_per_s": reference_tps,
            "throughput_ratio": ours_tps / reference_tps, **evaluate_bert(model, data),
            "train_seconds": history.seconds, "train_steps": len(history.steps)}


def generation_speed(max_len: int = 256, repeats: int = 3) -> dict[str, float]:
    """Tokens per second generating from one token to ``max_len``, with and without the cache."""
    torch.manual_seed(0)
    model = GPT(TransformerConfig(vocab_size=100, **{**MODEL_SIZE, "max_len": max_len})).eval()  # untrained: speed only
    prompt = torch.tensor([[5]])
    best, written = {}, {}
    for use_cache in (True, False):
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            written[use_cache] = generate(model, prompt, max_len - 1, greedy=True, use_cache=use_cache)
            timings.append(time.perf_counter() - start)
        best[use_cache] = (max_len - 1) / min(timings)
    # A speed-up only counts if the cache writes exactly what recomputing everything writes.
    return {"tokens_per_s_cache": best[True], "tokens_per_s_no_cache": best[False],
            "speedup": best[True] / best[False], "generated_tokens": max_len - 1,
            "same_tokens": bool(torch.equal(written[True], written[False])),
            "tiny_gpt_tokens_per_s": tiny_gpt_speed(repeats), "threads": torch.get_num_threads()}


def tiny_gpt_speed(repeats: int = 3) -> float:
    """Tokens per second of the shipped tiny GPT writing greedily from ``[BOS]`` to its full length, batch 1."""
    pretrained = load_pretrained("tiny-gpt")
    prompt = torch.tensor([[pretrained.tokenizer.bos_id]])
    new_tokens = pretrained.model.config.max_len - 1
    generate(pretrained.model, prompt, new_tokens, greedy=True)  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(pretrained.model, prompt, new_tokens, greedy=True)
        timings.append(time.perf_counter() - start)
    return new_tokens / min(timings)


SECTIONS = ("gpt", "bert", "generation", "contention", "finetune", "qa", "sft", "chat")


def run_bench(n_stories: int = 60_000, steps: int | None = None, throughput_steps: int = 40,
              generation_len: int = 256, n_samples: int = 500, n_labels: int = 256,
              qa_labels: int = QA_BENCH_LABELS, sft_examples: int = SFT_BENCH_EXAMPLES,
              chat_comparisons: int = CHAT_COMPARISONS, sections: Sequence[str] = SECTIONS,
              recipe_steps: int = 30, compile: bool = False) -> dict[str, dict[str, float]]:
    """The figures of ``course bench`` for ``sections`` (all of them by default), as one dictionary.

    By default GPT trains at notebook 06's settings and BERT with the shipped
    checkpoint's recipe; ``steps`` sets both runs' length instead (for tests).
    The fine-tuning sections take longest: ``qa`` and ``sft`` train three
    and two models on thousands of questions (several minutes each), ``chat``
    a reward model, RLHF and DPO from the shipped ``chat-sft`` (about five);
    ``contention`` runs two lessons twice each (about six).
    """
    unknown = [section for section in sections if section not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"sections must be some of {SECTIONS}, got {list(sections)!r}")
    if steps is None:
        gpt_config, bert_config = notebook_train_config("gpt"), checkpoint_train_config("bert")
    else:
        gpt_config, bert_config = family_train_config("gpt", steps), family_train_config("bert", steps)
    use_fair_threads()  # the thread count a notebook would get on this machine now
    measure = {
        "gpt": lambda: bench_gpt(StoryData.build("gpt", n_stories), gpt_config, throughput_steps, n_samples,
                                 recipe_steps, compile),
        "bert": lambda: bench_bert(StoryData.build("bert", n_stories), bert_config, throughput_steps, compile),
        "generation": lambda: generation_speed(generation_len),
        "contention": contention_table,
        "finetune": lambda: {**finetune_table(n_labels), "prompt_full": prompt_full(n_labels)},
        "qa": lambda: qa_table(qa_labels),
        "sft": lambda: sft_table(sft_examples),
        "chat": lambda: chat_table(chat_comparisons),
    }
    return {section: measure[section]() for section in SECTIONS if section in sections}
