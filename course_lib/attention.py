"""Attention: the one operation every model of the course is built from.

Notebook 01 builds ``scaled_dot_product_attention`` step by step, notebook 02
splits it into heads (``MultiHeadAttention``) and masks padding
(``padding_mask``), notebook 04 hides the future (``causal_mask``).

Every mask here is boolean and **True means "may attend"**, the convention of
PyTorch's ``F.scaled_dot_product_attention``. (``nn.MultiheadAttention`` uses
the opposite one: there True means "ignore".)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.utils import check_positive_int

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
    "KVCache",
]


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention (Vaswani et al., 2017, "Attention Is All You Need", section 3.2.1).

        Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

    Each query is compared with every key by a dot product; the softmax turns
    the scores of one query into weights that sum to 1; the output is the
    weighted average of the values. "We suspect that for large values of d_k,
    the dot products grow large in magnitude, pushing the softmax function
    into regions where it has extremely small gradients. To counteract this
    effect, we scale the dot products by 1/sqrt(d_k)."

    Args:
        q: queries, shape (..., Tq, d_k).
        k: keys, shape (..., Tk, d_k).
        v: values, shape (..., Tk, d_v).
        mask: optional boolean tensor broadcastable to (..., Tq, Tk); True
            means "this query may attend to this key". Masked scores become
            -inf, so their weights are exactly 0. Every query needs at least
            one allowed key.

    The leading dimensions ``...`` (batch, heads) of q, k and v broadcast
    against each other.

    Returns:
        output: shape (..., Tq, d_v).
        weights: shape (..., Tq, Tk); each row sums to 1.
    """
    _check_attention_inputs(q, k, v, mask)
    return _attend(q, k, v, mask)


def _attend(q, k, v, mask, empty_rows_attend_to_nothing: bool = False):
    """The computation of ``scaled_dot_product_attention``, without its checks.

    empty_rows_attend_to_nothing: a query whose mask allows no key gets
    all-zero weights (and a zero output) instead of NaN, as PyTorch's fused
    kernel does; for the models, where such a query is a padded position.
    """
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: a masked key gets weight 0
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk), each row sums to 1
    if mask is not None and empty_rows_attend_to_nothing:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # softmax over nothing: NaN -> 0
    output = weights @ v  # (..., Tq, d_v)
    return output, weights


def _check_attention_inputs(q, k, v, mask) -> None:
    """The checks of ``scaled_dot_product_attention``, including the one that reads the mask's values."""
    _check_tensor("q", q, min_dim=2)
    _check_tensor("k", k, min_dim=2)
    _check_tensor("v", v, min_dim=2)
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    d_k, Tq, Tk = q.shape[-1], q.shape[-2], k.shape[-2]
    if k.shape[-1] != d_k:
        raise ValueError(
            f"k has shape {_shape(k)}, expected (..., Tk, d_k) with d_k = {d_k}, "
            f"the last dimension of q {_shape(q)}"
        )
    if v.shape[-2] != Tk:
        raise ValueError(
            f"v has shape {_shape(v)}, expected (..., Tk, d_v) with Tk = {Tk}, "
            f"the number of keys in k {_shape(k)}"
        )
    try:
        batch = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of q {_shape(q)}, k {_shape(k)} and v {_shape(v)} "
            "do not broadcast against each other"
        ) from None
    if mask is not None:
        _check_mask(mask, batch + (Tq, Tk))
        _check_every_query_has_a_key(mask)


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The mask of a decoder: position i may attend to positions 0..i, never to later ones.

    Returns a (T, T) bool tensor, True on and below the diagonal:

        T=3:  [[ True, False, False],
               [ True,  True, False],
               [ True,  True,  True]]
    """
    check_positive_int("T", T)
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def padding_mask(attention_mask: torch.Tensor, check_empty_rows: bool = True) -> torch.Tensor:
    """Turn a batch's real-token mask into a key mask for multi-head attention.

    Args:
        attention_mask: (B, T), bool or 0/1; True or 1 marks a real token,
            False or 0 a padding token. Every sequence needs a real token.
        check_empty_rows: raise for a sequence without a real token. The
            models turn it off: there such a sequence's outputs are never
            used, and the check would wait for the GPU at every forward pass.

    Returns:
        A (B, 1, 1, T) bool tensor, True for real keys. It broadcasts against
        multi-head scores (B, n_heads, Tq, Tk=T): no query of any head attends
        to a padding key. Padding *queries* still get outputs (attending to
        the real keys); a loss should ignore those positions.
    """
    _check_padding_mask(attention_mask, check_empty_rows)
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def _check_padding_mask(attention_mask, check_empty_rows: bool) -> None:
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got shape {_shape(attention_mask)}")
    # A bool mask, what the tokenizer returns, needs no look at its values.
    if attention_mask.dtype != torch.bool and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(
            f"attention_mask must be bool or hold only 0 and 1, got values "
            f"{sorted(set(attention_mask.unique().tolist()))}"
        )
    if check_empty_rows:
        empty = (~attention_mask.bool().any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"attention_mask rows {empty} have no real token; every sequence needs at least one")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Cut the features of every position into ``n_heads`` heads: (B, T, d_model) -> (B, n_heads, T, d_head).

    Head h gets features h*d_head : (h+1)*d_head, with d_head = d_model // n_heads.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_positive_int("n_heads", n_heads)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, d_model), got shape {_shape(x)}")
    B, T, d_model = x.shape
    if d_model % n_heads != 0:
        raise ValueError(f"x has d_model = {d_model}, which n_heads = {n_heads} does not divide")
    x = x.reshape(B, T, n_heads, d_model // n_heads)  # (B, T, n_heads, d_head)
    # Heads go in front of T so that attention runs over (T, d_head) for every (batch, head) pair.
    return x.transpose(1, 2)  # (B, n_heads, T, d_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Undo ``split_heads``: (B, n_heads, T, d_head) -> (B, T, n_heads * d_head), heads side by side."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, n_heads, T, d_head), got shape {_shape(x)}")
    B, n_heads, T, d_head = x.shape
    x = x.transpose(1, 2)  # (B, T, n_heads, d_head)
    return x.reshape(B, T, n_heads * d_head)  # (B, T, d_model)


class KVCache:
    """The keys and values one attention layer has computed so far, kept for generation.

    When a decoder generates token t+1, the keys and values of tokens 0..t
    are the same as at the previous step (a causal layer never lets a token
    see later ones), so they are kept here and only the new token's are
    computed. ``len(cache)`` is the number of positions cached.

    The positions live in buffers of ``max_len`` positions (the model's
    longest sequence), allocated at the first ``append``: a step writes only
    its new positions, where ``torch.cat`` would copy the whole cache into a
    longer tensor at every step. Without ``max_len`` the buffers double when full.
    """

    def __init__(self, max_len: int | None = None):
        if max_len is not None:
            check_positive_int("max_len", max_len)
        self.max_len = max_len
        self.keys: torch.Tensor | None = None    # (B, n_heads, T_cached, d_head), a view of the buffer
        self.values: torch.Tensor | None = None  # (B, n_heads, T_cached, d_head), a view of the buffer
        self._key_buffer: torch.Tensor | None = None    # (B, n_heads, capacity, d_head)
        self._value_buffer: torch.Tensor | None = None  # (B, n_heads, capacity, d_head)

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys and values (B, n_heads, T_new, d_head); return all of them, cached ones first."""
        start = len(self)
        end = start + keys.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._grow(keys, values, end)
        self._key_buffer.narrow(2, start, end - start).copy_(keys)
        self._value_buffer.narrow(2, start, end - start).copy_(values)
        self.keys = self._key_buffer.narrow(2, 0, end)  # (B, n_heads, T_cached + T_new, d_head)
        self.values = self._value_buffer.narrow(2, 0, end)
        return self.keys, self.values

    def _grow(self, keys: torch.Tensor, values: torch.Tensor, needed: int) -> None:
        """New buffers for at least ``needed`` positions, holding the positions cached so far."""
        capacity = max(needed, self.max_len or 0, 2 * len(self))
        old_keys, old_values = self.keys, self.values
        self._key_buffer = keys.new_empty(*keys.shape[:-2], capacity, keys.shape[-1])
        self._value_buffer = values.new_empty(*values.shape[:-2], capacity, values.shape[-1])
        if old_keys is not None:
            self._key_buffer.narrow(2, 0, old_keys.shape[-2]).copy_(old_keys)
            self._value_buffer.narrow(2, 0, old_values.shape[-2]).copy_(old_values)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al., 2017, section 3.2.2).

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
        where head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

    "Multi-head attention allows the model to jointly attend to information
    from different representation subspaces at different positions."
    The h projections W_i^Q of size (d_model, d_head) sit side by side in one
    (d_model, d_model) linear layer ``q_proj`` (likewise ``k_proj``,
    ``v_proj``); ``split_heads`` cuts its output into heads.

    Self-attention: ``mha(x)``; queries, keys and values all come from x.
    Cross-attention: ``mha(x, memory)``; queries from x (B, Tq, d_model),
    keys and values from memory (B, Tk, d_model), Tk may differ from Tq.

    Two ways to compute the same thing:

    * the readable one, our ``scaled_dot_product_attention``, which also
      returns the weights; used when ``need_weights=True`` or
      ``self.store_attention_weights`` is True, and the weights are kept in
      ``self.attention_weights`` (B, n_heads, Tq, Tk) for plotting;
    * otherwise PyTorch's fused ``F.scaled_dot_product_attention``, which is
      faster and never builds the weights; ``self.attention_weights`` is then None.

    Self-attention computes its queries, keys and values with one matrix
    product, the three weight matrices side by side: the same numbers as
    three products, one large operation instead of three small ones.

    check_empty_rows: raise when ``mask`` leaves a query no key to attend to.
    The models' blocks turn it off: in a model such a query is a padded
    position whose output is never used, and the check would wait for the
    GPU in every layer. Without the check, such a query gets zero weights
    and a zero output on both paths (before ``out_proj``).
    check_inputs: check the shapes and types of every call's inputs. The
    models' blocks turn it off: the model checks its input once per call,
    and the same checks in every layer would only cost time.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 check_empty_rows: bool = True, check_inputs: bool = True):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model = {d_model} must be divisible by n_heads = {n_heads}, "
                "so that every head gets d_model // n_heads features"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.dropout = dropout
        self.check_empty_rows = check_empty_rows
        self.check_inputs = check_inputs
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        self.store_attention_weights = False
        self.attention_weights: torch.Tensor | None = None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: (B, Tq, d_model).
            key: (B, Tk, d_model); defaults to ``query`` (self-attention).
            value: (B, Tk, d_model); defaults to ``key``.
            mask: optional bool, True = may attend, broadcastable to
                (B, n_heads, Tq, Tk): ``causal_mask(T)`` (T, T),
                ``padding_mask(attention_mask)`` (B, 1, 1, Tk), or both
                combined with ``&``.
            need_weights: take the readable path and keep this call's weights
                in ``self.attention_weights``.
            cache: self-attention only; the keys and values of earlier
                positions. This call's are appended to it and attention runs
                over all of them, so Tk = len(cache) after the call.
            is_causal: each query may also attend only to its own and earlier
                positions (combined with ``mask``). With a cache, the queries
                are the last Tq of the Tk positions.

        Returns:
            (B, Tq, d_model).
        """
        key = query if key is None else key
        value = key if value is None else value
        if self.check_inputs:
            self._check_inputs(query, key, value, mask, cache)
        Tq = query.shape[1]

        if key is query and value is query:
            projected = self._project_self(query)  # three (B, Tq, d_model), views of one product
        else:
            projected = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        q, k, v = (split_heads(x, self.n_heads) for x in projected)  # (B, n_heads, T, d_head) each
        if cache is not None:
            k, v = cache.append(k, v)  # (B, n_heads, T_cached + Tk, d_head)
        Tk = k.shape[-2]

        # BERT and GPT also drop attention weights while training (the paper drops only sublayer outputs).
        dropout_p = self.dropout if self.training else 0.0
        readable = need_weights or self.store_attention_weights
        if is_causal and Tq == 1:
            is_causal = False  # one query, the last position, may see every key: generating with a cache
        if is_causal and (readable or mask is not None or Tq != Tk):
            future = causal_mask(Tk, device=q.device)[Tk - Tq:]  # (Tq, Tk): query i is position Tk - Tq + i
            mask = future if mask is None else mask & future
            is_causal = False
        if readable:
            if self.check_empty_rows:
                out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, n_heads, Tq, d_head)
            else:
                out, weights = _attend(q, k, v, mask, empty_rows_attend_to_nothing=True)
            # Detached: the plotted weights must not keep the whole autograd graph alive.
            self.attention_weights = weights.detach()  # (B, n_heads, Tq, Tk)
            if dropout_p > 0:
                out = F.dropout(weights, p=dropout_p) @ v  # the same sum, over the dropped weights
        else:
            # is_causal without a mask lets PyTorch pick its fastest kernel.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
            self.attention_weights = None
        return self.out_proj(merge_heads(out))  # (B, Tq, d_model)

    def _project_self(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x Wq, x Wk and x Wv from one product with the three weight matrices side by side."""
        weight, bias = stacked_projection(self)
        return F.linear(x, weight, bias).chunk(3, dim=-1)  # (B, T, 3 d_model) -> three (B, T, d_model)

    def _check_inputs(self, query, key, value, mask, cache) -> None:
        for name, x in (("query", query), ("key", key), ("value", value)):
            _check_tensor(name, x)
            if x.dim() != 3 or x.shape[-1] != self.d_model:
                raise ValueError(f"{name} must have shape (B, T, d_model={self.d_model}), got shape {_shape(x)}")
        if not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(
                f"query, key and value must share the batch size B, got shapes "
                f"{_shape(query)}, {_shape(key)} and {_shape(value)}"
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"value has shape {_shape(value)}, expected (B, Tk, d_model) with Tk = {key.shape[1]}, "
                f"the length of key {_shape(key)}"
            )
        if mask is not None:
            Tk = key.shape[1] + (len(cache) if cache is not None else 0)
            _check_mask(mask, (query.shape[0], self.n_heads, query.shape[1], Tk))
            if self.check_empty_rows:
                # The fused kernel would silently return zeros for a query with no allowed key.
                _check_every_query_has_a_key(mask)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}"


def stacked_projection(attention: MultiHeadAttention) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The query, key and value projections' weights stacked (3 d_model, d_model), and their biases (3 d_model,)."""
    layers = (attention.q_proj, attention.k_proj, attention.v_proj)
    weight = torch.cat([layer.weight for layer in layers])
    bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
    return weight, bias


# Input checks shared by the functions above: each error names the argument,
# what it received and what was expected.


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_tensor(name: str, x, min_dim: int = 0) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {_shape(x)}")


def _check_mask(mask, scores_shape: tuple[int, ...]) -> None:
    """Check that ``mask`` is boolean and can mask scores of shape ``(..., Tq, Tk)``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}; "
            "for a 0/1 mask with 1 = may attend, pass mask.bool()"
        )
    try:
        broadcast = tuple(torch.broadcast_shapes(mask.shape, scores_shape))
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"mask has shape {_shape(mask)}, which does not broadcast to the attention scores' "
            f"shape (..., Tq, Tk) = {scores_shape}"
        )


def _check_every_query_has_a_key(mask: torch.Tensor) -> None:
    """Reading the mask's values makes the CPU wait for the GPU: the models' fast path skips this check."""
    # A query with no allowed key would take a softmax over nothing but -inf: 0/0 = NaN.
    has_a_key = mask.any(dim=-1)
    if not has_a_key.all():
        where = (~has_a_key).nonzero()[0].tolist()  # index of the first empty row, without the key dim
        row = where[-1] if where else 0
        raise ValueError(
            f"row {row} of the mask allows no key (mask[{', '.join(map(str, where + [':']))}] is all False, "
            f"mask shape {_shape(mask)}); every query must be allowed to attend to at least one key"
        )
