"""The course's architecture diagrams, drawn by code in one colour-blind-safe style.

Every diagram is a small function that returns a matplotlib ``Figure``;
``write_all(folder)`` saves all of them as SVG files, which the notebooks
show from markdown with ``![...](figures/<name>.svg)``::

    python -c "from course_lib.lab.diagrams import write_all; write_all('notebooks/figures')"

The style, shared by every diagram (in ``drawing.py``, with the drawing primitives):

* colours from the Okabe-Ito palette (``OKABE_ITO``), which stays
  distinguishable with the common forms of colour blindness; fills are
  light tints of it (``FILLS``), text is black on a white background;
* colour is never the only cue: each kind of part also has its own shape
  and a label (linear layers are square boxes, attention and feed-forward
  rounded boxes, layer norms flat pills, a residual addition a circle with a
  plus, a mask a small grid of allowed and blocked cells);
* text is written as paths (``svg.fonttype = "path"``), so a diagram looks
  the same in JupyterLab and in a code-hosting site's preview whatever
  fonts are installed; ids are salted with a fixed string and the date is
  left out, so that regenerating gives byte-identical files.

=======================  ==========================================  ========
file                     what it shows                               notebook
=======================  ==========================================  ========
``attention.svg``        Q/K/V projections, scaled dot-product        01
``multi_head.svg``       split into heads, concatenate, W_O           02
``encoder_block.svg``    post-norm and pre-norm blocks side by side   03
``encoder_decoder.svg``  encoder, decoder and cross-attention         04
``bert_gpt.svg``         the same body, the differences               05-07
``kv_cache.svg``         generation with a key/value cache            06
``gpt_to_chatgpt.svg``   pretraining, SFT, preferences, RLHF or DPO   10, 00
=======================  ==========================================  ========
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from course_lib.lab.drawing import (
    FILLS, FONT, GREY, OKABE_ITO, ROLES, SMALL, STYLE, TITLE, WHITE, _arrow, _box, _canvas, _cell, _feature_bar,
    _frame, _mask_icon, _residual_column, _style, _sublayer, _text, save_svg,
)

__all__ = [
    "OKABE_ITO",
    "FILLS",
    "ROLES",
    "STYLE",
    "WHITE",
    "TINY_MODEL_SIZES",
    "DIAGRAMS",
    "attention_diagram",
    "multi_head_diagram",
    "encoder_block_diagram",
    "encoder_decoder_diagram",
    "bert_gpt_diagram",
    "kv_cache_diagram",
    "gpt_to_chatgpt_diagram",
    "save_svg",
    "write_all",
]


# ---------------------------------------------------------------------------
# 1. Scaled dot-product attention (notebook 01)
# ---------------------------------------------------------------------------


def attention_diagram() -> Figure:
    """Q, K and V projected from x; scores Q K^T / sqrt(d_k); the optional mask; softmax; weights @ V."""
    with _style():
        W, H = 8.4, 3.9
        fig, ax = _canvas(W, H, "Scaled dot-product attention",
                          r"Attention$(Q, K, V) = \mathrm{softmax}(QK^{\top} / \sqrt{d_k})\,V$,"
                          "  computed for all T tokens at once")
        yq, yk, yv = 2.65, 1.85, 0.75
        ychain = (yq + yk) / 2
        x = _box(ax, 0.5, (yq + yv) / 2, 0.72, yq - yv + 0.5, "", "data")
        _text(ax, x.cx, x.cy + 0.35, "x", size=14, style="italic")
        _text(ax, x.cx, x.cy - 0.2, "T tokens\n" + r"$\times\ d_{\mathrm{model}}$", size=SMALL)
        projections = {}
        for name, y in (("Q", yq), ("K", yk), ("V", yv)):
            _arrow(ax, (x.right[0], y), (1.2, y))
            projections[name] = _box(ax, 1.52, y, 0.62, 0.44, f"$W_{name}$", "linear", size=FONT + 1)
        # Scores, mask and softmax: a T x T matrix that becomes the weights.
        scores = _box(ax, 3.15, ychain, 1.1, 1.15, "", "attention")
        _text(ax, scores.cx, ychain + 0.22, r"$QK^{\top}/\sqrt{d_k}$", size=FONT + 0.5)
        _text(ax, scores.cx, ychain - 0.25, "scores\n" + r"$T \times T$", size=SMALL)
        for name, y in (("Q", yq), ("K", yk)):
            start = projections[name].right
            _arrow(ax, start, (2.28, y), (2.28, ychain + (0.2 if name == "Q" else -0.2)),
                   (scores.left[0], ychain + (0.2 if name == "Q" else -0.2)))
            _text(ax, 2.05, y + 0.15, name, size=FONT, style="italic")
        _text(ax, 2.02, yk - 0.17, r"$T \times d_k$", size=SMALL)
        mask = _box(ax, 4.55, ychain, 1.1, 1.15, "", "mask", dashed=True)
        _text(ax, mask.cx, ychain + 0.4, "mask (optional)", size=SMALL)
        _mask_icon(ax, mask.cx - 0.22, ychain - 0.3, 0.11, causal=True)
        _text(ax, mask.cx, ychain - 0.43, "blocked → −∞", size=SMALL)
        _arrow(ax, scores.right, mask.left)
        softmax = _box(ax, 5.95, ychain, 1.1, 1.15, "", "attention")
        _text(ax, softmax.cx, ychain + 0.2, "softmax", size=FONT)
        _text(ax, softmax.cx, ychain - 0.25, "row by row:\nweights ≥ 0,\nsum to 1", size=SMALL)
        _arrow(ax, mask.right, softmax.left)
        combine = _box(ax, 7.4, (ychain + yv) / 2, 1.05, ychain - yv + 0.75, "", "attention")
        _text(ax, combine.cx, combine.cy + 0.2, r"weights $\cdot\ V$", size=FONT)
        _text(ax, combine.cx, combine.cy - 0.3, "a weighted\naverage of\nthe values", size=SMALL)
        _arrow(ax, softmax.right, (combine.left[0], ychain))
        _arrow(ax, projections["V"].right, (combine.left[0], yv))
        _text(ax, 4.55, yv + 0.15, "V", size=FONT, style="italic")
        _text(ax, 4.55, yv - 0.17, r"$T \times d_v$", size=SMALL)
        _arrow(ax, combine.top, (combine.cx, 3.1))
        _text(ax, combine.cx, 3.25, r"output  $T \times d_v$", size=SMALL)
        _text(ax, 0.15, 0.15, "The mask sets blocked scores to −∞ before the softmax, so their weights become "
              "exactly 0 (padding; the future, in a decoder).", size=SMALL, ha="left")
    return fig


# ---------------------------------------------------------------------------
# 2. Multi-head attention (notebook 02)
# ---------------------------------------------------------------------------

HEAD_COLOURS = ("blue", "orange", "bluish_green", "reddish_purple")
# The sizes of the pretrained tiny-bert and tiny-gpt (course_lib/checkpoints/*/config.json; a test keeps them equal).
TINY_MODEL_SIZES = {"d_model": 64, "n_heads": 4}


def multi_head_diagram() -> Figure:
    """d_model split into h heads of d_k features, attention in every head, concatenation, W_O."""
    with _style():
        W, H = 8.4, 4.7
        d_model, h = TINY_MODEL_SIZES["d_model"], TINY_MODEL_SIZES["n_heads"]
        fig, ax = _canvas(W, H, "Multi-head attention",
                          r"$h$ heads attend side by side, each in its own $d_k = d_{\mathrm{model}} / h$ features"
                          f" (the tiny BERT and GPT: $d_{{\\mathrm{{model}}}} = {d_model}$, $h = {h}$, "
                          f"$d_k = {d_model // h}$)")
        y0, y1 = 0.75, 3.55
        ymid = (y0 + y1) / 2
        x = _box(ax, 0.45, ymid, 0.6, y1 - y0, "", "data")
        _text(ax, x.cx, ymid + 0.3, "x", size=14, style="italic")
        _text(ax, x.cx, ymid - 0.25, "T ×\n" + r"$d_{\mathrm{model}}$", size=SMALL)
        proj = _box(ax, 1.6, ymid, 1.1, y1 - y0, "", "linear")
        _text(ax, proj.cx, ymid + 0.35, r"$W_Q,\ W_K,\ W_V$", size=FONT)
        _text(ax, proj.cx, ymid - 0.3, "one\n" + r"$d_{\mathrm{model}} \times d_{\mathrm{model}}$" + "\nlayer each",
              size=SMALL)
        _arrow(ax, x.right, proj.left)
        split = _feature_bar(ax, 2.75, y0, y1, 0.34, HEAD_COLOURS)
        _arrow(ax, proj.right, (2.75 - 0.17, ymid))
        _text(ax, 2.75, y1 + 0.2, "split Q, K, V", size=SMALL, weight="bold")
        _text(ax, 2.75, y0 - 0.2, r"$h \times d_k$", size=SMALL)
        heads = []
        for i, (y, name) in enumerate(zip(split, HEAD_COLOURS)):
            head = _box(ax, 4.3, y, 1.9, 0.5, "", colour=name, role="attention")
            _text(ax, head.cx, y + 0.08, f"head {i + 1}", size=FONT, weight="bold")
            _text(ax, head.cx, y - 0.13, rf"attention$(Q_{i + 1}, K_{i + 1}, V_{i + 1})$", size=SMALL - 0.5)
            _arrow(ax, (2.75 + 0.17, y), head.left)
            heads.append(head)
        _text(ax, 4.3, y1 + 0.2, r"each head: $T \times d_k$ in, $T \times d_k$ out", size=SMALL)
        merged = _feature_bar(ax, 5.95, y0, y1, 0.34, HEAD_COLOURS)
        for head, y in zip(heads, merged):
            _arrow(ax, head.right, (5.95 - 0.17, y))
        _text(ax, 5.95, y1 + 0.2, "concatenate", size=SMALL, weight="bold")
        _text(ax, 5.95, y0 - 0.2, r"$T \times d_{\mathrm{model}}$", size=SMALL)
        out = _box(ax, 6.85, ymid, 0.6, 1.1, r"$W_O$", "linear", size=FONT + 1)
        _arrow(ax, (5.95 + 0.17, ymid), out.left)
        _arrow(ax, out.right, (7.65, ymid))
        _text(ax, 7.7, ymid, "output\n" + r"$T \times d_{\mathrm{model}}$", size=SMALL, ha="left")
        _text(ax, 0.15, 0.2, r"Cutting a $d_{\mathrm{model}}$-wide projection into $h$ pieces gives $h$ projections "
              r"for the price of one; $W_O$ mixes what the heads found.", size=SMALL, ha="left")
    return fig


# ---------------------------------------------------------------------------
# 3. The encoder block, post-norm and pre-norm (notebook 03)
# ---------------------------------------------------------------------------


def encoder_block_diagram() -> Figure:
    """Post-norm (original transformer, BERT) and pre-norm (GPT-2) blocks side by side."""
    with _style():
        W, H = 8.4, 6.35
        fig, ax = _canvas(W, H, "The transformer block: post-norm and pre-norm",
                          "Read from the bottom up. The thick line is the residual stream: "
                          "each sublayer reads from it and adds to it.")
        sublayers = [("attention", "multi-head\nself-attention"), ("ffn", "feed-forward\n(two linear layers, GELU)")]
        columns = (
            (0.9, False, "post-norm", "original transformer, BERT",
             r"$x \leftarrow \mathrm{LayerNorm}(x + \mathrm{sublayer}(x))$",
             "The stream itself is normalised after every\naddition. Plus one LayerNorm on the\n"
             "embeddings, before the first block."),
            (5.05, True, "pre-norm", "GPT-2, the course's GPT",
             r"$x \leftarrow x + \mathrm{sublayer}(\mathrm{LayerNorm}(x))$",
             "The stream is only ever added to: an identity\npath from input to output. Plus one final\n"
             "LayerNorm after the last block."))
        for sx, pre, name, who, rule, note in columns:
            left, right = sx - 0.5, sx + 2.6
            _text(ax, left, 0.36, note, size=SMALL, ha="left")
            _text(ax, left, 0.84, rule, size=FONT, ha="left")
            _text(ax, sx + 0.1, 1.14, "x from the layer below", size=SMALL, ha="left")
            _arrow(ax, (sx, 1.05), (sx, 1.4), lw=2.2, head=False)
            top = _residual_column(ax, sx, pre_norm=pre, y=1.4, sublayers=sublayers)
            _frame(ax, left, 1.3, right, top + 0.05, "× N")
            _arrow(ax, (sx, top), (sx, top + 0.32), lw=2.2)
            _text(ax, sx + 0.1, top + 0.22, "to the next block", size=SMALL, ha="left")
            _text(ax, left, H - 0.92, name, size=FONT + 1.5, weight="bold", ha="left")
            _text(ax, right, H - 0.92, who, size=SMALL, ha="right")
    return fig


# ---------------------------------------------------------------------------
# 4. The encoder-decoder and cross-attention (notebook 04)
# ---------------------------------------------------------------------------


def encoder_decoder_diagram() -> Figure:
    """The encoder reads the source once; the decoder's cross-attention looks up the encoder's output."""
    with _style():
        W, H = 8.4, 7.1
        fig, ax = _canvas(W, H, "The encoder–decoder: cross-attention joins the two stacks",
                          "Read from the bottom up. Post-norm blocks, as in the original transformer "
                          "(the course's EncoderDecoder).")
        ex, dx, w = 2.0, 6.1, 2.3
        # Encoder.
        _text(ax, ex, 0.3, "source: jack went to the beach\nto swim in the morning .", size=SMALL, style="italic")
        emb = _box(ax, ex, 0.95, w, 0.36, "token + position embeddings", "embedding", size=SMALL + 0.5)
        _arrow(ax, (ex, 0.55), emb.bottom)
        y = emb.top[1]
        attention, y = _sublayer(ax, ex, y, w, "self-attention\nevery word sees every word", "attention",
                                 residual_side=-1)
        _mask_icon(ax, attention.right[0] + 0.12, attention.cy - 0.2, 0.1, causal=False)
        _text(ax, attention.right[0] + 0.32, attention.cy - 0.33, "full", size=SMALL - 0.5)
        _, y = _sublayer(ax, ex, y, w, "feed-forward", "ffn", residual_side=-1)
        _frame(ax, ex - w / 2 - 0.4, emb.top[1] + 0.03, ex + w / 2 + 0.55, y + 0.1, "× N", label_at="left")
        memory = _box(ax, ex, y + 0.6, w, 0.5, "memory: one vector\nper source token", "memory", size=SMALL + 0.5)
        _arrow(ax, (ex, y), memory.bottom)
        _text(ax, ex, H - 0.88, "encoder", size=FONT + 1.5, weight="bold")
        # Decoder.
        _text(ax, dx, 0.3, "target so far, shifted right:\n[BOS] mane jack ad litus natare ivit", size=SMALL,
              style="italic")
        emb = _box(ax, dx, 0.95, w, 0.36, "token + position embeddings", "embedding", size=SMALL + 0.5)
        _arrow(ax, (dx, 0.55), emb.bottom)
        y = emb.top[1]
        masked, y = _sublayer(ax, dx, y, w, "masked self-attention\nno word sees a later one", "attention",
                              residual_side=1)
        _mask_icon(ax, masked.left[0] - 0.52, masked.cy - 0.2, 0.1, causal=True)
        _text(ax, masked.left[0] - 0.32, masked.cy - 0.33, "causal", size=SMALL - 0.5)
        cross, y = _sublayer(ax, dx, y, w, "cross-attention\nqueries from the decoder", "attention",
                             residual_side=1)
        _, y = _sublayer(ax, dx, y, w, "feed-forward", "ffn", residual_side=1)
        _frame(ax, dx - w / 2 - 0.55, emb.top[1] + 0.03, dx + w / 2 + 0.4, y + 0.1, "× N")
        head = _box(ax, dx, y + 0.5, w * 0.8, 0.34, "linear + softmax", "linear", size=SMALL + 0.5)
        _arrow(ax, (dx, y), head.bottom)
        _arrow(ax, head.top, (dx, head.top[1] + 0.25))
        _text(ax, dx, head.top[1] + 0.5, "next tokens: mane jack ad litus\nnatare ivit . [EOS]", size=SMALL,
              style="italic")
        _text(ax, dx, H - 0.88, "decoder", size=FONT + 1.5, weight="bold")
        # The bridge: the encoder's output becomes every decoder block's keys and values.
        gap = (ex + w / 2 + dx - w / 2) / 2 + 0.05
        _arrow(ax, memory.right, (gap, memory.cy), (gap, cross.cy), cross.left, lw=2.0, colour=OKABE_ITO["orange"])
        _text(ax, gap + 0.08, (memory.cy + cross.cy) / 2 + 0.1, "keys and\nvalues for\nevery block", size=SMALL,
              ha="left", weight="bold")
    return fig


# ---------------------------------------------------------------------------
# 5. BERT and GPT side by side (notebooks 05, 06, 07)
# ---------------------------------------------------------------------------


def bert_gpt_diagram() -> Figure:
    """One transformer body; BERT and GPT differ in the mask, the norm placement, the head and the objective."""
    with _style():
        W, H = 8.4, 6.95
        fig, ax = _canvas(W, H, "BERT and GPT: one body, a few differences")
        bx, gx, mx, w = 1.95, 6.45, 4.2, 3.0
        y_in, y_emb, y_before, y_att, y_norm, y_ffn, y_after, y_head, y_out, y_obj, y_name = (
            0.4, 1.0, 1.55, 2.27, 2.95, 3.45, 4.07, 4.67, 5.3, 5.86, 6.35)
        frame_bottom, frame_top = 1.82, 3.7

        def row(name, y):
            _text(ax, mx, y, name, size=SMALL, style="italic")

        _text(ax, bx, y_name, "BERT", size=TITLE + 1, weight="bold")
        _text(ax, gx, y_name, "GPT", size=TITLE + 1, weight="bold")
        _text(ax, mx, y_name, "read from the\nbottom up", size=SMALL)
        row("example input", y_in)
        _box(ax, bx, y_in, w, 0.42, "[CLS] tom went to the [MASK]\nto swim . [SEP]", "data", size=SMALL)
        _box(ax, gx, y_in, w, 0.42, "[BOS] tom went to the", "data", size=SMALL)
        row("embeddings", y_emb)
        bemb = _box(ax, bx, y_emb, w, 0.42, "token + position + segment\nembeddings", "embedding", size=SMALL + 0.5)
        gemb = _box(ax, gx, y_emb, w, 0.42, "token + position\nembeddings", "embedding", size=SMALL + 0.5)
        row("before the\nblocks", y_before)
        _box(ax, bx, y_before, 1.6, 0.26, "LayerNorm", "norm", size=SMALL)
        _text(ax, gx + 0.1, y_before, "(nothing)", size=SMALL, style="italic", ha="left")
        # The blocks: the same sublayers, a different mask and norm placement.
        row("attention\nmask", y_att)
        for cx, causal, text in ((bx, False, "self-attention, full:\nevery token sees\nevery token"),
                                 (gx, True, "self-attention, causal:\na token sees itself\nand the past")):
            box = _box(ax, cx - 0.25, y_att, w - 0.5, 0.6, text, "attention", size=SMALL + 0.5)
            _mask_icon(ax, box.right[0] + 0.07, y_att - 0.18, 0.09, causal=causal)
        row("norm\nplacement", y_norm)
        _box(ax, bx, y_norm, w, 0.38, "post-norm: add, then LayerNorm", "norm", size=SMALL + 0.5)
        _box(ax, gx, y_norm, w, 0.38, "pre-norm: LayerNorm, sublayer, add", "norm", size=SMALL + 0.5)
        row("the same", y_ffn)
        for cx in (bx, gx):
            _box(ax, cx, y_ffn, w, 0.34, "feed-forward (GELU)", "ffn", size=SMALL + 0.5)
            _frame(ax, cx - w / 2 - 0.1, frame_bottom, cx + w / 2 + 0.1, frame_top)
            _text(ax, cx - w / 2 - 0.05, frame_top + 0.13, "× N blocks", size=SMALL, ha="left",
                  weight="bold")
            _arrow(ax, (cx, y_in + 0.21), (cx, y_emb - 0.21))
        _arrow(ax, bemb.top, (bx, y_before - 0.13))
        _arrow(ax, (bx, y_before + 0.13), (bx, frame_bottom))
        _arrow(ax, gemb.top, (gx, frame_bottom))
        row("after the\nblocks", y_after)
        _arrow(ax, (bx, frame_top), (bx, y_head - 0.3))
        _text(ax, bx + 0.1, y_after, "(nothing)", size=SMALL, style="italic", ha="left")
        _box(ax, gx, y_after, 1.6, 0.26, "final LayerNorm", "norm", size=SMALL)
        _arrow(ax, (gx, frame_top), (gx, y_after - 0.13))
        _arrow(ax, (gx, y_after + 0.13), (gx, y_head - 0.3))
        row("head", y_head)
        bhead = _box(ax, bx, y_head, w, 0.6, "masked-LM head:\ndense, GELU, LayerNorm,\nthen " +
                     r"$\cdot\,E^{\top} + b$", "linear", size=SMALL + 0.5)
        ghead = _box(ax, gx, y_head, w, 0.6, "next-token head:\n" + r"$\cdot\,E^{\top}$", "linear",
                     size=SMALL + 0.5)
        for head, emb, side in ((bhead, bemb, -1), (ghead, gemb, 1)):
            x_out = head.cx + side * (w / 2 + 0.22)
            _arrow(ax, (head.cx + side * w / 2, head.cy), (x_out, head.cy), (x_out, emb.cy),
                   (emb.cx + side * w / 2, emb.cy), dashed=True, lw=1.1, both=True)
            _text(ax, x_out + side * 0.08, (head.cy + emb.cy) / 2, "tied: the same embedding matrix E",
                  size=SMALL - 0.5, rotation=90, ha="right" if side < 0 else "left")
        row("example\noutput", y_out)
        for head, cx in ((bhead, bx), (ghead, gx)):
            _arrow(ax, head.top, (cx, y_out - 0.17))
        _text(ax, bx, y_out, "[MASK] → beach or gym: “to swim”,\non the right, decides", size=SMALL)
        _text(ax, gx, y_out, "next → park, beach, cafe, …: only\nthe left context is known", size=SMALL)
        row("objective", y_obj)
        _box(ax, bx, y_obj, w, 0.42, "fill the [MASK]: loss on the ~15%\nhidden tokens only", "objective",
             size=SMALL + 0.5)
        _box(ax, gx, y_obj, w, 0.42, "predict the next token:\nloss at every position", "objective",
             size=SMALL + 0.5)
    return fig


# ---------------------------------------------------------------------------
# 6. The KV cache (notebook 06)
# ---------------------------------------------------------------------------


def kv_cache_diagram() -> Figure:
    """Three generation steps: only the new token's q, k, v are computed; k and v join the cache."""
    with _style():
        W, H = 8.4, 5.1
        fig, ax = _canvas(W, H, "Generating with a key/value cache",
                          "At each step only the new token is fed in; its key and value join the cache, "
                          "its query reads all of them.")
        prompt = ["[BOS]", "tom"]
        steps = [("went", "to"), ("to", "the"), ("the", "beach")]
        panel_w, gap = 2.55, 0.2
        cell_w, cell_h, q_gap = 0.32, 0.28, 0.2
        for i, (token, following) in enumerate(steps):
            x0 = 0.2 + i * (panel_w + gap)
            pc = x0 + panel_w / 2
            n = len(prompt) + i + 1   # positions cached after this step: 0 .. n - 1
            ax.add_patch(FancyBboxPatch((x0, 0.6), panel_w, H - 1.4, boxstyle="round,pad=0,rounding_size=0.1",
                                        facecolor="none", edgecolor=GREY, linewidth=1.0, zorder=0))
            _text(ax, x0 + 0.12, H - 1.02, f"step {i + 1}", size=FONT, weight="bold", ha="left")
            _text(ax, x0 + panel_w - 0.12, H - 1.02, f"{n} positions cached", size=SMALL, ha="right")
            new = _box(ax, pc, 0.95, 1.6, 0.34, f"new token: {token}", "data", size=SMALL + 0.5)
            proj = _box(ax, pc, 1.6, 2.2, 0.4, "", "linear")
            _text(ax, pc, 1.6, r"$W_Q, W_K, W_V$" + "  (this token only)", size=SMALL)
            _arrow(ax, new.top, proj.bottom)
            # The cache: one column per position, keys on top, values below; the new column last.
            x_first = pc + 0.08 - (n * cell_w + q_gap + cell_w) / 2 + cell_w / 2   # the cache and q, centred
            y_k, y_v = 2.55, 2.55 - cell_h
            for p in range(n):
                cx = x_first + p * cell_w
                is_new = p == n - 1
                _cell(ax, cx, y_k, cell_w, cell_h, f"$k_{p}$", "orange", bold_edge=is_new)
                _cell(ax, cx, y_v, cell_w, cell_h, f"$v_{p}$", "orange", bold_edge=is_new)
            x_new = x_first + (n - 1) * cell_w
            _text(ax, x_first - cell_w / 2 - 0.06, y_k, "K", size=SMALL, ha="right", weight="bold")
            _text(ax, x_first - cell_w / 2 - 0.06, y_v, "V", size=SMALL, ha="right", weight="bold")
            _arrow(ax, (x_new, proj.top[1]), (x_new, y_v - cell_h / 2))
            _text(ax, x_new - 0.07, (proj.top[1] + y_v - cell_h / 2) / 2, f"append $k_{n - 1}, v_{n - 1}$",
                  size=SMALL - 0.5, ha="right")
            # The query of the new token, compared with every cached key.
            q = _cell(ax, x_new + cell_w + q_gap, 3.08, cell_w, cell_h, f"$q_{n - 1}$", "blue", bold_edge=True)
            _arrow(ax, (q.cx, proj.top[1]), (q.cx, q.bottom[1]))
            for p in range(n):
                cx = x_first + p * cell_w
                ax.plot([q.left[0], cx], [q.cy, y_k + cell_h / 2], color=OKABE_ITO["blue"], linewidth=0.9,
                        zorder=3)
            attend = _box(ax, pc, 3.55, 2.3, 0.3, "attention over all cached k, v", "attention", size=SMALL)
            _arrow(ax, q.top, (q.cx, attend.bottom[1]))
            _text(ax, pc, 3.93, f"next token: {following}", size=SMALL + 0.5, weight="bold")
            _arrow(ax, attend.top, (pc, 3.82))
            if i + 1 < len(steps):   # the token generated here is the next step's input
                x_gap = x0 + panel_w + gap / 2
                next_new = x0 + panel_w + gap + panel_w / 2 - 0.8
                _arrow(ax, (attend.right[0], 3.93), (x_gap, 3.93), (x_gap, new.cy), (next_new, new.cy),
                       dashed=True, lw=1.1)
        _text(ax, 0.2, 0.3, f"The prompt “{' '.join(prompt)}” was read at once, its keys and values cached; it "
              "predicted “went”. Each step then computes one new q, k, v\nin every layer (a layer's cache: "
              "B × heads × positions × " + r"$d_k$" + "). Attention still reads every cached key; nothing earlier "
              "is recomputed.", size=SMALL, ha="left")
    return fig


# ---------------------------------------------------------------------------
# 7. From GPT to ChatGPT (notebooks 10 and 00)
# ---------------------------------------------------------------------------


def gpt_to_chatgpt_diagram() -> Figure:
    """Pretraining, instruction tuning, preferences, then a reward model and RLHF, or DPO."""
    with _style():
        W, H = 8.4, 4.6
        fig, ax = _canvas(W, H, "From GPT to ChatGPT",
                          "One model, tuned in stages; people's judgements come in at step 3.")
        bw, bh, y = 1.35, 1.2, 2.05

        def stage(cx, cy, name, text, colour, w=bw, h=bh):
            box = _box(ax, cx, cy, w, h, "", colour=colour, role="attention")
            _text(ax, cx, cy + h / 2 - 0.2, name, size=SMALL + 0.5, weight="bold")
            _text(ax, cx, cy - 0.12, text, size=SMALL - 0.5)
            return box

        pre = stage(0.85, y, "1 pretraining", "predict the next\ntoken on lots\nof text", "blue")
        sft = stage(2.4, y, "2 instruction\ntuning (SFT)", "question → answer\ntexts; loss on\nthe answer only",
                    "bluish_green")
        prefs = stage(3.95, y, "3 preferences", "people compare\ntwo answers:\n" + r"$A \succ B$", "orange")
        reward = stage(5.4, 2.85, "4 reward model", "scores answers:\n" + r"$P(A \succ B) = \sigma(r_A - r_B)$",
                       "sky_blue", w=1.25, h=0.95)
        rlhf = stage(6.8, 2.85, "5 RLHF", "policy gradient:\nreward − β · KL", "vermillion", w=1.2, h=0.95)
        dpo = stage(6.1, 1.0, "4–5 DPO", "tune directly on the preferences:\nno reward model, the SFT model\n"
                    "as the reference", "reddish_purple", w=2.6, h=0.95)
        chat = _box(ax, 7.95, y, 0.65, 0.6, "chat\nmodel", "data", size=SMALL + 0.5, weight="bold")
        _arrow(ax, pre.right, sft.left)
        _arrow(ax, sft.right, prefs.left)
        _arrow(ax, prefs.right, (4.72, y), (4.72, reward.cy), reward.left)
        _arrow(ax, (4.72, y), (4.72, dpo.cy), dpo.left)
        _text(ax, 4.85, y, "or", size=SMALL, style="italic", ha="left")
        _arrow(ax, reward.right, rlhf.left)
        _arrow(ax, rlhf.right, (chat.cx, rlhf.cy), chat.top)
        _arrow(ax, dpo.right, (chat.cx, dpo.cy), chat.bottom)
        # The leash: RLHF pays for every step away from the SFT model.
        top = rlhf.top[1] + 0.25
        _arrow(ax, rlhf.top, (rlhf.cx, top), (sft.cx, top), sft.top, dashed=True, lw=1.4,
               colour=OKABE_ITO["vermillion"])
        _text(ax, (rlhf.cx + sft.cx) / 2 + 0.5, top + 0.13, "KL leash: stay close to the SFT model", size=SMALL,
              weight="bold")
        _text(ax, pre.cx, pre.bottom[1] - 0.2, "→ base model", size=SMALL, style="italic")
        _text(ax, sft.cx, sft.bottom[1] - 0.2, "→ SFT model", size=SMALL, style="italic")
        _text(ax, prefs.cx, prefs.bottom[1] - 0.2, "→ comparisons", size=SMALL, style="italic")
        _text(ax, 0.15, 0.2, "The reward model only stands in for people's judgement: pushed too hard, the policy "
              "finds answers it scores high but people would not.", size=SMALL, ha="left")
    return fig


# ---------------------------------------------------------------------------
# Registry and files
# ---------------------------------------------------------------------------

DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "attention": attention_diagram,
    "multi_head": multi_head_diagram,
    "encoder_block": encoder_block_diagram,
    "encoder_decoder": encoder_decoder_diagram,
    "bert_gpt": bert_gpt_diagram,
    "kv_cache": kv_cache_diagram,
    "gpt_to_chatgpt": gpt_to_chatgpt_diagram,
}


def write_all(folder: str | Path) -> list[Path]:
    """Draw every diagram and save it as ``<folder>/<name>.svg``; return the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The SVG's title, which screen readers and some viewers show: the first line of the function's docstring.
    return [save_svg(draw(), folder / f"{name}.svg", title=draw.__doc__.strip().splitlines()[0])
            for name, draw in DIAGRAMS.items()]
