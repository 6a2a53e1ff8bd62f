"""The drawing kit of the architecture diagrams: palette, style, boxes, arrows and SVG files.

The diagrams themselves are in ``diagrams.py``; this module holds what they
share: the Okabe-Ito palette and its tints, the role of each kind of part,
the matplotlib style that makes every SVG byte-identical on every machine,
the drawing primitives (coordinates in inches) and ``save_svg``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path as MplPath

# Okabe & Ito (2008), "Color Universal Design": eight colours that people with
# the common colour-vision deficiencies can still tell apart.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
WHITE = "#FFFFFF"


def _tint(hex_colour: str, share: float) -> str:
    """``share`` of the colour, the rest white: a light fill that keeps black text readable."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - share * (255 - c)):02X}" for c in rgb)


# Light tints of the palette, for the inside of boxes (the edge keeps the full colour).
FILLS = {name: _tint(colour, 0.55 if name == "yellow" else 0.25) for name, colour in OKABE_ITO.items()}
GREY = FILLS["black"]   # a tint of black: light frames and the blocked cells of a mask
INK = OKABE_ITO["black"]

# What each kind of part looks like: (fill, edge, box style). Shapes differ too.
ROLES = {
    "data": (WHITE, INK, "square"),                                           # tokens, tensors
    "embedding": (FILLS["reddish_purple"], OKABE_ITO["reddish_purple"], "square"),
    "linear": (FILLS["sky_blue"], OKABE_ITO["blue"], "square"),              # W_Q, W_O, heads
    "attention": (FILLS["blue"], OKABE_ITO["blue"], "round"),
    "ffn": (FILLS["bluish_green"], OKABE_ITO["bluish_green"], "round"),
    "norm": (FILLS["yellow"], INK, "pill"),
    "mask": (FILLS["vermillion"], OKABE_ITO["vermillion"], "round"),
    "memory": (FILLS["orange"], OKABE_ITO["orange"], "square"),               # encoder output, KV cache
    "objective": (WHITE, OKABE_ITO["reddish_purple"], "round"),
}

# rcParams of every diagram: a font that ships with matplotlib, text as paths,
# fixed ids, white background.
STYLE = {
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "font.size": 10,
    "svg.fonttype": "path",
    "svg.hashsalt": "course_lib.lab.diagrams",
    "figure.facecolor": WHITE,
    "savefig.facecolor": WHITE,
    "savefig.edgecolor": WHITE,
    "axes.unicode_minus": True,
    "path.simplify": True,
}

FONT = 10      # text in boxes
SMALL = 8.5    # notes, shapes, examples
TITLE = 12.5


def _style():
    """matplotlib's defaults plus ``STYLE``, whatever a notebook has changed: the same file on every machine."""
    return matplotlib.style.context(["default", STYLE])


# ---------------------------------------------------------------------------
# Drawing kit. Coordinates are inches from the bottom-left corner of the figure.
# ---------------------------------------------------------------------------


class _Box:
    """Where a drawn box sits: its centre and size, and the midpoints of its sides."""

    def __init__(self, cx: float, cy: float, w: float, h: float):
        self.cx, self.cy, self.w, self.h = cx, cy, w, h

    @property
    def top(self) -> tuple[float, float]:
        return self.cx, self.cy + self.h / 2

    @property
    def bottom(self) -> tuple[float, float]:
        return self.cx, self.cy - self.h / 2

    @property
    def left(self) -> tuple[float, float]:
        return self.cx - self.w / 2, self.cy

    @property
    def right(self) -> tuple[float, float]:
        return self.cx + self.w / 2, self.cy


def _canvas(width: float, height: float, title: str | None = None, subtitle: str | None = None):
    """A white figure whose one axes is drawn in inches, with an optional title at the top left."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    if title:
        _text(ax, 0.15, height - 0.25, title, size=TITLE, ha="left", weight="bold")
    if subtitle:
        _text(ax, 0.15, height - 0.55, subtitle, size=SMALL + 0.5, ha="left")
    return fig, ax


def _text(ax, x, y, s, *, size=FONT, ha="center", va="center", weight="normal", style="normal",
          colour=INK, rotation=0, zorder=5):
    return ax.text(x, y, s, fontsize=size, ha=ha, va=va, fontweight=weight, fontstyle=style, color=colour,
                   rotation=rotation, zorder=zorder, linespacing=1.25)


def _box(ax, cx, cy, w, h, text="", role="data", *, size=FONT, weight="normal", dashed=False, lw=1.4,
         colour: str | None = None, zorder=3) -> _Box:
    """A box centred at (cx, cy); ``colour`` (a name of ``OKABE_ITO``) overrides the role's fill and edge."""
    fill, edge, shape = ROLES[role]
    if colour is not None:
        fill, edge = FILLS[colour], OKABE_ITO[colour]
    if shape == "square":
        style = "square,pad=0"
    elif shape == "pill":
        style = f"round,pad=0,rounding_size={h / 2:.3f}"
    else:
        style = f"round,pad=0,rounding_size={min(0.09, h / 3):.3f}"
    ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle=style, facecolor=fill, edgecolor=edge,
                                linewidth=lw, linestyle=(0, (4, 2)) if dashed else "solid", zorder=zorder))
    if text:
        _text(ax, cx, cy, text, size=size, weight=weight, zorder=zorder + 1)
    return _Box(cx, cy, w, h)


def _frame(ax, x0, y0, x1, y1, label=None, *, label_at="right"):
    """A dashed frame around repeated blocks, with a label such as "× N"."""
    ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.12",
                                facecolor="none", edgecolor=INK, linewidth=1.0, linestyle=(0, (5, 3)), zorder=1))
    if label:
        if label_at == "right":
            _text(ax, x1 + 0.08, y1 - 0.2, label, size=FONT, ha="left", weight="bold")
        else:
            _text(ax, x0 - 0.08, y1 - 0.2, label, size=FONT, ha="right", weight="bold")


def _arrow(ax, *points, colour=INK, lw=1.3, head=True, dashed=False, zorder=2, both=False):
    """A polyline through ``points`` with an arrow head at its end (and start, if ``both``)."""
    path = MplPath(points, [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1))
    style = ("<|-|>" if both else "-|>") if head else "-"
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle=style, mutation_scale=11, color=colour, linewidth=lw,
                                 linestyle=(0, (4, 2.5)) if dashed else "solid", zorder=zorder,
                                 joinstyle="miter", capstyle="butt"))


def _add(ax, cx, cy, r=0.13) -> _Box:
    """A residual addition: a circle with a plus."""
    ax.add_patch(Circle((cx, cy), r, facecolor=WHITE, edgecolor=INK, linewidth=1.3, zorder=4))
    ax.plot([cx - r * 0.6, cx + r * 0.6], [cy, cy], color=INK, linewidth=1.3, zorder=5, solid_capstyle="butt")
    ax.plot([cx, cx], [cy - r * 0.6, cy + r * 0.6], color=INK, linewidth=1.3, zorder=5, solid_capstyle="butt")
    return _Box(cx, cy, 2 * r, 2 * r)


def _mask_icon(ax, x0, y0, cell, *, causal: bool, n: int = 4, zorder=6):
    """A small n x n mask, rows = queries, columns = keys: filled = may attend, grey cross = blocked."""
    for i in range(n):           # row i from the top
        for j in range(n):
            allowed = (j <= i) or not causal
            x, y = x0 + j * cell, y0 + (n - 1 - i) * cell
            ax.add_patch(Rectangle((x, y), cell, cell, facecolor=OKABE_ITO["blue"] if allowed else WHITE,
                                   edgecolor=INK, linewidth=0.6, zorder=zorder))
            if not allowed:
                pad = cell * 0.22
                ax.plot([x + pad, x + cell - pad], [y + pad, y + cell - pad], color=OKABE_ITO["vermillion"],
                        linewidth=0.9, zorder=zorder + 1)
                ax.plot([x + pad, x + cell - pad], [y + cell - pad, y + pad], color=OKABE_ITO["vermillion"],
                        linewidth=0.9, zorder=zorder + 1)


def _cell(ax, cx, cy, w, h, text, colour_name, *, bold_edge=False, size=SMALL, zorder=4):
    """A vector drawn as one small cell (a query, a cached key or value)."""
    ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, facecolor=FILLS[colour_name],
                           edgecolor=INK if bold_edge else OKABE_ITO[colour_name], linewidth=2.0 if bold_edge else 1.1,
                           zorder=zorder))
    if text:
        _text(ax, cx, cy, text, size=size, zorder=zorder + 1)
    return _Box(cx, cy, w, h)


def _feature_bar(ax, cx, y0, y1, w, colours, *, labels=True):
    """A vector's d_model features drawn as one bar cut into heads, head 1 at the top."""
    n = len(colours)
    step = (y1 - y0) / n
    centres = []
    for i, name in enumerate(colours):
        y = y1 - (i + 1) * step
        ax.add_patch(Rectangle((cx - w / 2, y), w, step, facecolor=FILLS[name], edgecolor=OKABE_ITO[name],
                               linewidth=1.4, zorder=3))
        if labels:
            _text(ax, cx, y + step / 2, str(i + 1), size=SMALL, weight="bold")
        centres.append(y + step / 2)
    return centres


def _residual_column(ax, sx, *, pre_norm: bool, y: float, sublayers, w=1.85) -> float:
    """One block drawn as a residual stream (the thick line at ``sx``) with its sublayers branching off it.

    Post-norm: the stream passes through a LayerNorm after each addition.
    Pre-norm: a LayerNorm opens each branch; the stream is only ever added to.
    Starts at height ``y``; returns the height where the block's output leaves the stream.
    """
    bx = sx + 1.5
    for role, label in sublayers:
        split = y + 0.15
        _arrow(ax, (sx, y), (sx, split), lw=2.2, head=False)
        if pre_norm:
            norm = _box(ax, bx, split + 0.28, 0.95, 0.24, "LayerNorm", "norm", size=SMALL)
            box = _box(ax, bx, split + 0.76, w, 0.44, label, role, size=SMALL + 0.5)
            _arrow(ax, (sx, split), (bx, split), norm.bottom)
            _arrow(ax, norm.top, box.bottom)
        else:
            box = _box(ax, bx, split + 0.55, w, 0.44, label, role, size=SMALL + 0.5)
            _arrow(ax, (sx, split), (bx, split), box.bottom)
        add = _add(ax, sx, split + 1.13)
        _arrow(ax, box.top, (bx, add.cy), add.right)
        _arrow(ax, (sx, split), add.bottom, lw=2.2)                       # the residual: the stream goes on
        _text(ax, sx - 0.1, (split + add.cy) / 2, "residual", size=SMALL - 0.5, rotation=90, ha="right")
        y = add.top[1]
        if not pre_norm:
            norm = _box(ax, sx, add.cy + 0.37, 0.95, 0.24, "LayerNorm", "norm", size=SMALL)
            _arrow(ax, add.top, norm.bottom, lw=2.2)
            y = norm.top[1]
        else:
            _arrow(ax, (sx, y), (sx, y + 0.25), lw=2.2, head=False)
            y += 0.25
    return y


def _sublayer(ax, cx, y, w, text, role, *, residual_side: float, h=0.46, size=SMALL + 0.5):
    """A sublayer and its "add & norm" (post-norm, as in the original paper), with the residual around it.

    ``y`` is where the input arrives (the box's bottom); returns the top of the add & norm.
    """
    box = _box(ax, cx, y + 0.27 + h / 2, w, h, text, role, size=size)
    _arrow(ax, (cx, y), box.bottom)
    norm = _box(ax, cx, box.top[1] + 0.32, w * 0.7, 0.26, "add & norm", "norm", size=SMALL)
    _arrow(ax, box.top, norm.bottom)
    side = cx + residual_side * (w / 2 + 0.18)
    edge = norm.cx + residual_side * norm.w / 2
    _arrow(ax, (cx, y + 0.12), (side, y + 0.12), (side, norm.cy), (edge, norm.cy), lw=1.1)
    return box, norm.top[1]



def save_svg(fig: Figure, path: str | Path, title: str | None = None) -> Path:
    """Save ``fig`` as a deterministic SVG: text as paths, fixed ids, no date."""
    path = Path(path)
    with _style():
        metadata = {"Date": None, "Creator": None}
        if title:
            metadata["Title"] = title
        fig.savefig(path, format="svg", metadata=metadata)
    return path
