"""The layers a transformer is stacked from.

Positional encodings (notebook 02) come first; the feed-forward network and
the transformer block, in its encoder and decoder forms (notebooks 03-04), follow.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.attention import KVCache, MultiHeadAttention
from course_lib.utils import check_positive_int

__all__ = [
    "sinusoidal_positional_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "make_activation",
    "FeedForward",
    "TransformerBlock",
    "EncoderBlock",
    "DecoderBlock",
]


# ---------------------------------------------------------------------------
# Positional encodings
#
# Attention compares every position with every other and ignores where they
# are: permute the input and the outputs permute with it. "Since our model
# contains no recurrence and no convolution, in order for the model to make
# use of the order of the sequence, we must inject some information about the
# relative or absolute position of the tokens in the sequence" (Vaswani et
# al., 2017, section 3.5). Both kinds below are added to the token embeddings.
# ---------------------------------------------------------------------------


def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed positional encodings of "Attention Is All You Need" (section 3.5).

        PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    Each pair of features (2i, 2i+1) is a clock hand turning at its own
    speed, from one radian per position (i = 0) to one turn every
    2*pi*10000 positions. "We chose this function because we hypothesized it
    would allow the model to easily learn to attend by relative positions,
    since for any fixed offset k, PE[pos+k] can be represented as a linear
    function of PE[pos]."

    An odd d_model is allowed: the last feature is then a sine without its cosine.

    Returns:
        (max_len, d_model) float32 tensor with values in [-1, 1]; row 0 is [0, 1, 0, 1, ...].
    """
    check_positive_int("max_len", max_len)
    check_positive_int("d_model", d_model)
    # float64 while computing: in float32 the angles of positions near 500 are already off by about 3e-5.
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d_model / 2),)
    angles = pos / 10000 ** (two_i / d_model)  # (max_len, ceil(d_model / 2))
    pe = torch.empty(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])  # an odd d_model has one cosine fewer
    return pe.float()


def _check_positions(x, d_model: int, max_len: int, start: int, positions=None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape (B, T, d_model={d_model}), got shape {tuple(x.shape)}")
    if positions is not None and (not isinstance(positions, torch.Tensor) or positions.is_floating_point()
                                  or positions.shape != x.shape[:2]):
        received = f"{getattr(positions, 'dtype', type(positions).__name__)} {tuple(getattr(positions, 'shape', ()))}"
        raise ValueError(f"positions must be an integer tensor of shape (B, T) = {tuple(x.shape[:2])}, got {received}")
    check_positive_int("start", start, allow_zero=True)
    T = x.shape[1]
    if start + T > max_len:
        raise ValueError(
            f"x has T = {T} positions starting at position {start}, but positions stop at "
            f"max_len = {max_len}; use a shorter input or a model built with a larger max_len"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """Add the fixed sinusoidal encodings to a batch of embeddings.

    ``forward(x, start=0)``: x (B, T, d_model) -> x + PE[start : start + T], (B, T, d_model).
    ``start`` is the position of x's first token: 0 for a whole sequence,
    the number of tokens already seen when generating one token at a time.
    ``forward(x, positions=p)`` takes each token's position from p (B, T)
    instead: a left-padded row then counts from its first real token.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.d_model = d_model
        # A buffer moves with .to(device) but is not learned. Not persistent: it is
        # recomputed from (max_len, d_model), so checkpoints need not store it.
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        _check_positions(x, self.d_model, self.max_len, start, positions)
        if positions is not None:
            return x + self.pe[positions].to(x.dtype)  # (B, T, d_model) + (B, T, d_model)
        T = x.shape[1]
        return x + self.pe[start : start + T].to(x.dtype)  # (B, T, d_model) + (T, d_model)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


class LearnedPositionalEmbedding(nn.Module):
    """Add a learned vector per position, as BERT and GPT do.

    The paper "found that the two versions produced nearly identical results"
    and kept the sinusoids, which may extend to longer sequences than seen
    in training; a learned table stops at ``max_len``.

    ``forward(x, start=0)``: x (B, T, d_model) -> x + E[start : start + T], (B, T, d_model);
    ``forward(x, positions=p)``: x + E[p] with p (B, T), one position per token.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        check_positive_int("max_len", max_len)
        check_positive_int("d_model", d_model)
        self.max_len = max_len
        self.d_model = d_model
        self.embedding = nn.Embedding(max_len, d_model)  # row p is the vector of position p

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        _check_positions(x, self.d_model, self.max_len, start, positions)
        if positions is None:
            positions = torch.arange(start, start + x.shape[1], device=x.device)  # (T,)
        return x + self.embedding(positions)  # (B, T, d_model) + (T, d_model) or (B, T, d_model)


# ---------------------------------------------------------------------------
# Feed-forward network and the transformer block (notebooks 03-04)
# ---------------------------------------------------------------------------

# "gelu_tanh" is GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), which GPT-2
# was trained with; it differs from the exact GELU by up to about 5e-4.
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


def make_activation(name: str) -> nn.Module:
    """The activation called ``name`` ("relu", "gelu" or "gelu_tanh") as a module."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class FeedForward(nn.Module):
    """The position-wise feed-forward network (section 3.3).

        FFN(x) = max(0, x W1 + b1) W2 + b2

    The same two-layer MLP is applied to every position on its own: attention
    mixes information between positions, this network transforms what each
    position now holds. BERT and GPT use GELU instead of ReLU.

    (B, T, d_model) -> (B, T, d_model), through a hidden width d_ff.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        activation_module = make_activation(activation)  # checks the name before any weight is drawn
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = activation_module
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerBlock(nn.Module):
    """One transformer layer: (masked) self-attention, optional cross-attention, feed-forward.

    Every sub-layer is wrapped in a residual connection and a layer norm, in
    one of two placements:

    * post-norm (``norm_first=False``; the original paper, BERT):
      ``x = LayerNorm(x + Sublayer(x))``, "the output of each sub-layer is
      LayerNorm(x + Sublayer(x))" (section 3.1);
    * pre-norm (``norm_first=True``; GPT-2): ``x = x + Sublayer(LayerNorm(x))``.
      The residual path stays an identity from input to output, which makes
      deep stacks train without a careful warm-up.

    causal: self-attention sees only the current and earlier positions.
    cross_attention: a middle sub-layer whose queries come from x and whose
        keys and values come from an encoder's output (``memory``).

    layer_norm_eps: the small number each layer norm adds to the variance
        before dividing by its square root (PyTorch's 1e-5; BERT used 1e-12).

    check_inputs: the attention layers check the shapes of every call's
        inputs. A model turns it off in its blocks: it checks its input once
        per call instead of once per layer.

    A query that its mask leaves no key (a padded position in a left-padded
    batch) is not an error here: its output is never used.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *, norm_first: bool = False,
                 causal: bool = False, cross_attention: bool = False, activation: str = "gelu",
                 layer_norm_eps: float = 1e-5, check_inputs: bool = True):
        super().__init__()
        self.norm_first, self.causal = norm_first, causal
        self.self_attention = MultiHeadAttention(d_model, n_heads, dropout, check_empty_rows=False,
                                                 check_inputs=check_inputs)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        if cross_attention:
            self.cross_attention = MultiHeadAttention(d_model, n_heads, dropout, check_empty_rows=False,
                                                      check_inputs=check_inputs)
            self.norm_cross = nn.LayerNorm(d_model, eps=layer_norm_eps)
            self.dropout_cross = nn.Dropout(dropout)
        else:
            self.cross_attention = None
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model).

        mask: bool, True = may attend, broadcastable to (B, n_heads, T, T)
            (usually ``padding_mask``'s (B, 1, 1, T)); a causal block adds
            the causal mask itself.
        memory, memory_mask: encoder output (B, Tm, d_model) and a mask
            broadcastable to (B, n_heads, T, Tm), for cross-attention.
        cache: keys and values of earlier positions (generation); x then
            holds only the new positions.
        """
        if self.cross_attention is not None and memory is None:
            raise ValueError("this block has cross-attention: memory (B, Tm, d_model) must be given")
        if self.norm_first:  # pre-norm: each sub-layer reads a normalised copy; the stream is only added to
            x = x + self.dropout1(self.self_attention(self.norm1(x), mask=mask, cache=cache, is_causal=self.causal))
            if self.cross_attention is not None:
                x = x + self.dropout_cross(self.cross_attention(self.norm_cross(x), memory, mask=memory_mask))
            x = x + self.dropout2(self.feed_forward(self.norm2(x)))
        else:                # post-norm: the stream itself is normalised after every addition
            x = self.norm1(x + self.dropout1(self.self_attention(x, mask=mask, cache=cache, is_causal=self.causal)))
            if self.cross_attention is not None:
                x = self.norm_cross(x + self.dropout_cross(self.cross_attention(x, memory, mask=memory_mask)))
            x = self.norm2(x + self.dropout2(self.feed_forward(x)))
        return x  # (B, T, d_model)


class EncoderBlock(TransformerBlock):
    """An encoder layer: full self-attention and a feed-forward network (notebook 03)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *, norm_first: bool = False,
                 activation: str = "gelu", layer_norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, d_ff, dropout, norm_first=norm_first, activation=activation,
                         layer_norm_eps=layer_norm_eps)


class DecoderBlock(TransformerBlock):
    """A decoder layer: causal self-attention, cross-attention to the encoder (optional), feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *, norm_first: bool = False,
                 cross_attention: bool = True, activation: str = "gelu", layer_norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, d_ff, dropout, norm_first=norm_first, causal=True,
                         cross_attention=cross_attention, activation=activation, layer_norm_eps=layer_norm_eps)
