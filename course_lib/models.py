"""The models of the course, all built from one transformer body.

=================  ==========  =========  ============  ================================
model              attention   norm       cross-attn.   head
=================  ==========  =========  ============  ================================
``Encoder``        full        selectable no            (features, notebook 03)
``Decoder``        causal      selectable optional      (features, notebook 04)
``EncoderDecoder`` both        selectable yes           next target token (notebook 04)
``BERT``           full        post-norm  no            masked-LM, tied embeddings (05)
``GPT``            causal      pre-norm   no            next token, tied embeddings (06)
=================  ==========  =========  ============  ================================

BERT and GPT differ in three lines of their ``__init__``: the mask
(``causal``), where the layer norm sits (``norm_first``) and the head.
Where the layer norm sits is part of what a model is, not one of its sizes:
an argument of the generic models (``Encoder(config, norm_first=True)``),
not a field of ``TransformerConfig``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from course_lib.attention import KVCache, padding_mask
from course_lib.layers import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerBlock,
                               make_activation)
from course_lib.utils import check_positive_int


@dataclass
class TransformerConfig:
    """Sizes of a transformer. The defaults are the course's tiny models.

    vocab_size: number of token ids.
    max_len: longest sequence (positions 0 .. max_len - 1).
    d_model: width of every token's vector.
    n_heads: attention heads per layer (d_model must be divisible by it).
    n_layers: blocks stacked.
    d_ff: hidden width of the feed-forward network (usually 4 * d_model).
    dropout: dropout probability while training.
    positional: "learned" (BERT, GPT) or "sinusoidal" (original paper).
    activation: "gelu" (BERT, the course's GPT), "gelu_tanh" (GELU's tanh
        approximation, which GPT-2 used) or "relu" (original paper).
    n_segments: BERT's segment (sentence A / B) embeddings.
    layer_norm_eps: added to the variance inside every layer norm; PyTorch's
        1e-5 (GPT-2 too) by default, 1e-12 in the published BERT.

    ``activation`` and ``layer_norm_eps`` default to the tiny models'
    choices; ``hub.from_huggingface`` sets them to the published models'.
    """

    vocab_size: int
    max_len: int = 64
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    positional: str = "learned"
    activation: str = "gelu"
    n_segments: int = 2
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "d_model", "n_heads", "n_layers", "d_ff", "n_segments"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {self.positional!r}")
        if self.activation not in ("gelu", "gelu_tanh", "relu"):
            raise ValueError(f"activation must be 'gelu', 'gelu_tanh' or 'relu', got {self.activation!r}")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or not 0 < self.layer_norm_eps < 1:
            raise ValueError(f"layer_norm_eps must be a small positive number, got {self.layer_norm_eps!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class TransformerBody(nn.Module):
    """Token embeddings, positions and a stack of blocks: what every model here shares.

    causal: each position sees only itself and earlier ones (decoders, GPT).
    norm_first: pre-norm blocks, which need a final layer norm after the
        stack; post-norm blocks instead normalise the embeddings before it
        (as BERT does), so that every block receives normalised input.
    cross_attention: blocks also attend to an encoder's output (``memory``).
    """

    def __init__(self, config: TransformerConfig, *, causal: bool, norm_first: bool, cross_attention: bool = False):
        super().__init__()
        self.config, self.causal, self.norm_first = config, causal, norm_first
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        positions = LearnedPositionalEmbedding if config.positional == "learned" else SinusoidalPositionalEncoding
        self.position = positions(config.max_len, config.d_model)
        eps = config.layer_norm_eps
        self.embedding_norm = nn.Identity() if norm_first else nn.LayerNorm(config.d_model, eps=eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_heads, config.d_ff, config.dropout, norm_first=norm_first,
                             causal=causal, cross_attention=cross_attention, activation=config.activation,
                             layer_norm_eps=eps, check_inputs=False)  # checked once, in forward
            for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=eps) if norm_first else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                extra_embeddings: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Hidden states (B, T, d_model) of ``input_ids`` (B, T).

        attention_mask: (B, T) bool or 0/1, True for real tokens; padded
            keys are never attended to, and positions count from each
            row's first real token: a left-padded row's real tokens sit at
            the positions they would have alone (what Hugging Face's
            ``position_ids`` do); right padding changes no position.
        extra_embeddings: (B, T, d_model) added to the token embeddings
            (BERT's segments).
        memory, memory_mask: the encoder's output (B, Tm, d_model) and its
            (B, Tm) real-token mask, for cross-attention.
        cache: one ``KVCache`` per block; ``input_ids`` are then the tokens
            that follow those already cached (generation), and
            ``attention_mask`` covers the cached tokens too.

        A position with no real token to attend to (a sequence of padding
        only, or a padded position of a left-padded batch) is not an error:
        its output is never used.
        """
        start = len(cache[0]) if cache else 0
        self._check_inputs(input_ids, attention_mask, start)
        T = input_ids.shape[1]
        try:
            x = self.token_embedding(input_ids)  # (B, T, d_model)
        except IndexError:  # an id outside the table; checking every id beforehand would wait for the GPU
            raise ValueError(_out_of_vocabulary(input_ids, self.config.vocab_size)) from None
        if extra_embeddings is not None:
            x = x + extra_embeddings
        # (B, 1, 1, T) and (B, 1, 1, Tm). Sequences of padding only are allowed (see above), so not looked for.
        key_mask = None if attention_mask is None else padding_mask(attention_mask, check_empty_rows=False)
        cross_mask = None if memory_mask is None else padding_mask(memory_mask, check_empty_rows=False)
        positions = None
        if attention_mask is not None:  # count from each row's first real token: left padding moves nothing
            leading_padding = (attention_mask.long().cumsum(dim=1) == 0).sum(dim=1, keepdim=True)  # (B, 1)
            positions = (torch.arange(start, start + T, device=x.device) - leading_padding).clamp(min=0)  # (B, T)
        x = self.dropout(self.embedding_norm(self.position(x, start=start, positions=positions)))
        for i, block in enumerate(self.blocks):
            x = block(x, mask=key_mask, memory=memory, memory_mask=cross_mask,
                      cache=None if cache is None else cache[i])
        return self.final_norm(x)  # (B, T, d_model)

    def _check_inputs(self, input_ids, attention_mask, start: int) -> None:
        """Types and shapes only: looking at the values would make the CPU wait for the GPU."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32, torch.int):
            raise TypeError(f"input_ids must be an integer tensor of shape (B, T), got "
                            f"{type(input_ids).__name__} {getattr(input_ids, 'dtype', '')}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if start + T > self.config.max_len:
            raise ValueError(f"input_ids has {start + T} positions"
                             f"{f' (with {start} cached)' if start else ''}, more than max_len={self.config.max_len}")
        if isinstance(attention_mask, torch.Tensor) and attention_mask.shape != (B, start + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected (B, T) = "
                             f"({B}, {start + T}), the shape of input_ids{' with the cached tokens' if start else ''}")


def _out_of_vocabulary(input_ids: torch.Tensor, vocab_size: int) -> str:
    bad = input_ids[(input_ids < 0) | (input_ids >= vocab_size)][0].item()
    return f"input_ids holds id {bad}, outside the vocabulary (0 to {vocab_size - 1})"


class Encoder(TransformerBody):
    """Transformer encoder (notebook 03): every position attends to every other.

    norm_first: pre-norm blocks (GPT-2) instead of post-norm ones (the original paper, BERT).
    """

    def __init__(self, config: TransformerConfig, norm_first: bool = False):
        super().__init__(config, causal=False, norm_first=norm_first)


class Decoder(TransformerBody):
    """Transformer decoder (notebook 04): causal self-attention, optionally cross-attention to an encoder."""

    def __init__(self, config: TransformerConfig, cross_attention: bool = True, norm_first: bool = False):
        super().__init__(config, causal=True, norm_first=norm_first, cross_attention=cross_attention)


class EncoderDecoder(nn.Module):
    """The original transformer: encode the source once, decode the target token by token."""

    def __init__(self, source_config: TransformerConfig, target_config: TransformerConfig, norm_first: bool = False):
        super().__init__()
        if source_config.d_model != target_config.d_model:
            raise ValueError(f"source and target d_model must match for cross-attention, got "
                             f"{source_config.d_model} and {target_config.d_model}")
        self.encoder = Encoder(source_config, norm_first=norm_first)
        self.decoder = Decoder(target_config, cross_attention=True, norm_first=norm_first)
        self.lm_head = nn.Linear(target_config.d_model, target_config.vocab_size)

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Ts) source ids -> memory (B, Ts, d_model)."""
        return self.encoder(source_ids, attention_mask=source_mask)

    def decode(self, target_ids: torch.Tensor, memory: torch.Tensor,
               source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Tt) target ids so far and the memory -> next-token logits (B, Tt, target vocab)."""
        hidden = self.decoder(target_ids, memory=memory, memory_mask=source_mask)
        return self.lm_head(hidden)

    def forward(self, source_ids: torch.Tensor, target_ids: torch.Tensor,
                source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits (B, Tt, target vocab) for every target position at once."""
        return self.decode(target_ids, self.encode(source_ids, source_mask), source_mask)

    @torch.no_grad()
    def greedy_decode(self, source_ids: torch.Tensor, bos_id: int, eos_id: int, max_len: int | None = None,
                      source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Translate by always taking the most likely next token.

        Returns (B, T) target ids starting with ``bos_id``; a row that has
        produced ``eos_id`` keeps producing it, so finished rows are easy to cut.
        """
        max_len = max_len or self.decoder.config.max_len
        memory = self.encode(source_ids, source_mask)  # encoded once, read at every step
        target = torch.full((source_ids.shape[0], 1), bos_id, dtype=torch.long, device=source_ids.device)
        finished = torch.zeros(source_ids.shape[0], dtype=torch.bool, device=source_ids.device)
        for _ in range(max_len - 1):
            next_ids = self.decode(target, memory, source_mask)[:, -1].argmax(-1)  # (B,)
            next_ids = next_ids.masked_fill(finished, eos_id)
            target = torch.cat([target, next_ids[:, None]], dim=1)
            finished |= next_ids == eos_id
            if finished.all():
                break
        return target


class MaskedLMHead(nn.Module):
    """BERT's head: a dense layer, the activation (GELU), layer norm, then the token embeddings read backwards.

    The output projection shares its weights with the token embedding
    ("tied"): the score of token w is the dot product of the hidden state
    with w's own embedding, plus a bias.
    """

    def __init__(self, config: TransformerConfig, token_embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.activation = make_activation(config.activation)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.token_embedding = token_embedding
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.activation(self.dense(hidden)))  # (B, T, d_model)
        return hidden @ self.token_embedding.weight.T + self.bias  # (B, T, vocab_size)


class BERT(nn.Module):
    """BERT (Devlin et al., 2018): a post-norm encoder pretrained by filling in blanks.

    ``BERT(config)(input_ids, attention_mask=None)`` returns masked-LM logits
    (B, T, vocab_size); ``encode`` returns the hidden states (B, T, d_model)
    that fine-tuning builds on.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.body = TransformerBody(config, causal=False, norm_first=False)   # sees both sides; post-norm
        self.segment_embedding = nn.Embedding(config.n_segments, config.d_model)
        self.mlm_head = MaskedLMHead(config, self.body.token_embedding)       # fills in blanks
        self.apply(_init_weights)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Contextual embeddings (B, T, d_model); position 0 is ``[CLS]``."""
        if segment_ids is None:
            segment_ids = torch.zeros_like(input_ids)
        return self.body(input_ids, attention_mask, extra_embeddings=self.segment_embedding(segment_ids))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlm_head(self.encode(input_ids, attention_mask, segment_ids))  # (B, T, vocab_size)


class GPT(nn.Module):
    """GPT (Radford et al., 2018; GPT-2 layout): a pre-norm causal decoder predicting the next token.

    ``GPT(config)(input_ids)`` returns next-token logits (B, T, vocab_size):
    ``logits[:, t]`` scores the token that follows ``input_ids[:, :t + 1]``.
    Prompts of different lengths are batched left-padded, with an
    ``attention_mask`` (B, T) marking the real tokens: every row's real
    positions then get the logits they would get alone.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.body = TransformerBody(config, causal=True, norm_first=True)     # sees only the past; pre-norm
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # predicts the next token
        self.lm_head.weight = self.body.token_embedding.weight                # tied to the embeddings
        self.apply(_init_weights)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               cache: list[KVCache] | None = None) -> torch.Tensor:
        """Hidden states (B, T, d_model); position t has seen tokens 0..t only."""
        return self.body(input_ids, attention_mask, cache=cache)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: list[KVCache] | None = None) -> torch.Tensor:
        return self.lm_head(self.encode(input_ids, attention_mask, cache))  # (B, T, vocab_size)

    def new_cache(self) -> list[KVCache]:
        """An empty key/value cache, one per block, for ``generate``."""
        return [KVCache(self.config.max_len) for _ in self.body.blocks]


class ClassificationHead(nn.Module):
    """A small MLP on one position's features: (B, d_model) -> (B, n_classes) logits."""

    def __init__(self, d_model: int, n_classes: int, hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        hidden = hidden or d_model
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def _init_weights(module: nn.Module) -> None:
    """Small normal weights (std 0.02) as in BERT and GPT-2: deep stacks train steadily from them."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
