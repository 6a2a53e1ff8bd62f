"""Tests of course_lib.lab.diagrams: every diagram draws, in the palette, and the committed SVGs match the code."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from course_lib.lab import diagrams, drawing

FIGURES = Path(__file__).resolve().parents[1] / "notebooks" / "figures"
REGENERATE = "python -c \"from course_lib.lab.diagrams import write_all; write_all('notebooks/figures')\""
EXPECTED = {"attention", "multi_head", "encoder_block", "encoder_decoder", "bert_gpt", "kv_cache", "gpt_to_chatgpt"}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> list[Path]:
    return diagrams.write_all(tmp_path_factory.mktemp("figures"))


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def figure(request) -> Figure:
    return diagrams.DIAGRAMS[request.param]()


def test_there_is_a_diagram_for_each_architecture():
    assert set(diagrams.DIAGRAMS) == EXPECTED


def test_every_diagram_function_returns_a_figure_that_fits_a_notebook(figure):
    assert isinstance(figure, Figure)
    width, height = figure.get_size_inches()
    assert width <= 8.5 and height <= 7.5   # about 800 px wide in a notebook, no scrolling


def test_the_palette_is_okabe_ito():
    # Okabe & Ito (2008), "Color Universal Design", the colour-blind-safe palette.
    assert {name: colour.upper() for name, colour in diagrams.OKABE_ITO.items()} == {
        "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
        "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
    }
    # The fills are tints of the same colours: every channel moves the same share of the way to white.
    for name, fill in diagrams.FILLS.items():
        base = diagrams.OKABE_ITO[name]
        darkest = min((1, 3, 5), key=lambda i: int(base[i:i + 2], 16))  # the channel that measures the share best
        share = (255 - int(fill[darkest:darkest + 2], 16)) / (255 - int(base[darkest:darkest + 2], 16))
        assert 0.1 < share < 0.9 and drawing._tint(base, round(share, 2)) == fill, (name, fill)


def test_every_colour_drawn_comes_from_the_palette(written):
    # What a reader sees: every colour named in the SVG files (text, drawn as paths, is black by default).
    allowed = {c.upper() for c in [*diagrams.OKABE_ITO.values(), *diagrams.FILLS.values(), diagrams.WHITE]}
    for path in written:
        used = {c.upper() for c in re.findall(r"#[0-9a-fA-F]{6}\b", path.read_text())}
        assert used <= allowed, f"{path.name} paints with {sorted(used - allowed)}, outside the palette"
        assert re.findall(r"(?:fill|stroke)\s*[:=]\s*\"?(?!none)[a-z]", path.read_text()) == [], path.name


def test_shape_tells_the_parts_apart_as_well_as_colour():
    # Square linear layers, rounded attention, pill-shaped norms: readable without colour.
    shapes = {role: style for role, (_, _, style) in diagrams.ROLES.items()}
    assert len({shapes["linear"], shapes["attention"], shapes["norm"]}) == 3


def test_write_all_writes_one_svg_per_diagram(written):
    assert sorted(path.name for path in written) == sorted(f"{name}.svg" for name in EXPECTED)
    for path in written:
        svg = path.read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        assert "<text" not in svg, f"{path.name}: text must be drawn as paths, to look the same everywhere"
        assert "<dc:date>" not in svg, f"{path.name}: a date would change the file at every regeneration"
        assert path.stat().st_size < 200_000, f"{path.name} is {path.stat().st_size // 1000} kB"


def test_the_committed_svgs_are_what_the_code_draws(written):
    for path in written:
        committed = FIGURES / path.name
        assert committed.exists(), f"notebooks/figures/{path.name} is missing; regenerate with {REGENERATE}"
        assert committed.read_bytes() == path.read_bytes(), (
            f"notebooks/figures/{path.name} differs from what course_lib.lab.diagrams draws; "
            f"regenerate with {REGENERATE}")


def test_drawing_leaves_the_global_style_alone(tmp_path):
    import matplotlib

    before = {key: matplotlib.rcParams[key] for key in diagrams.STYLE}
    diagrams.save_svg(diagrams.attention_diagram(), tmp_path / "attention.svg")
    assert {key: matplotlib.rcParams[key] for key in diagrams.STYLE} == before


def test_a_notebook_s_style_does_not_change_the_files(written, tmp_path):
    import matplotlib

    with matplotlib.rc_context({"lines.linewidth": 4, "font.size": 20, "patch.force_edgecolor": True,
                                "font.family": "serif", "svg.fonttype": "none"}):
        path = diagrams.save_svg(diagrams.attention_diagram(), tmp_path / "attention.svg",
                                 title=diagrams.attention_diagram.__doc__.strip().splitlines()[0])
    assert path.read_bytes() == next(p for p in written if p.name == "attention.svg").read_bytes()


@pytest.mark.parametrize("checkpoint", ["tiny-bert", "tiny-gpt"])
def test_the_multi_head_diagram_quotes_the_tiny_models_sizes(checkpoint):
    config = Path(diagrams.__file__).resolve().parents[1] / "checkpoints" / checkpoint / "config.json"
    model = json.loads(config.read_text())["model"]
    assert {key: model[key] for key in diagrams.TINY_MODEL_SIZES} == diagrams.TINY_MODEL_SIZES
