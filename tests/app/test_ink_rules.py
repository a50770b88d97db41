"""Each rule of the photo pipeline (app/ink.py) alone, on small synthetic arrays: what it must
refuse or remove, and the case beside it that it must not. (tests/app/test_ink.py reads whole
photos; the regression set checks them all together.)"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from app import ink
from app.errors import NoDigit
from app.ink_params import PARAMS, describe

SIDE = 200


def _page(*segments: tuple[int, int, int, int], width: int = 6, level: float = 0.8) -> np.ndarray:
    """Dark ink on light paper (H, W) float32: straight strokes (x0, y0, x1, y1) on grey 0.85."""
    page = np.full((SIDE, SIDE), 0.85, np.float32)
    for x0, y0, x1, y1 in segments:
        cv2.line(page, (x0, y0), (x1, y1), float(0.85 * (1 - level)), width)
    return cv2.GaussianBlur(page, (0, 0), 0.8)


def _mask(*segments: tuple[int, int, int, int], width: int = 4) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    for x0, y0, x1, y1 in segments:
        cv2.line(mask, (x0, y0), (x1, y1), 1, width)
    return mask


def _rule(grey: np.ndarray) -> str | None:
    """The rule that refuses `grey`, or None when a digit's ink is found."""
    try:
        ink.digit_ink(grey)
    except NoDigit as exc:
        return exc.rule
    return None


SEVEN = ((70, 50, 130, 50), (130, 50, 90, 150))


def test_every_tuned_number_has_a_unit_and_a_reason() -> None:
    described = describe()
    assert len(described) >= 60
    for name, value, unit, why in described:
        assert isinstance(value, int | float), name
        assert unit.strip(), name
        assert len(why.split()) >= 4, name


def test_a_written_digit_passes_every_rule() -> None:
    assert _rule(_page(*SEVEN)) is None


def test_noise_rule() -> None:
    rng = np.random.default_rng(0)
    assert _rule(rng.random((SIDE, SIDE)).astype(np.float32)) == "noise"
    grainy = _page(*SEVEN) + rng.normal(0, 0.02, (SIDE, SIDE)).astype(np.float32)
    assert _rule(np.clip(grainy, 0, 1)) is None  # a photo's grain is not noise


def test_blank_rule() -> None:
    assert _rule(np.full((SIDE, SIDE), 0.85, np.float32)) == "blank"
    light = np.tile(np.linspace(0.6, 0.9, SIDE, dtype=np.float32), (SIDE, 1))
    assert _rule(light) == "blank"  # uneven light alone is flattened away


def test_no_mark_rule_specks() -> None:
    page = np.full((SIDE, SIDE), 0.85, np.float32)
    for x, y in ((30, 40), (150, 60), (90, 170)):
        page[y : y + 2, x : x + 2] = 0.1  # specks far under the speck share
    assert _rule(page) == "no_mark"
    assert _rule(_page((100, 60, 100, 140))) is None  # a 1 alone is a digit


def test_along_line_rule_names_itself() -> None:
    ruled = np.zeros((SIDE, SIDE), bool)
    ruled[100:102] = True
    along = _mask((60, 101, 140, 101), width=2)
    crossing = _mask((100, 50, 100, 150))
    assert ink._along_lines(along, ruled)
    assert not ink._along_lines(crossing, ruled)
    looser = dataclasses.replace(PARAMS, line_reach=0)  # the reach is the rule's own number
    assert not ink._along_lines(_mask((60, 103, 140, 103), width=1), ruled, looser)


def test_haze_rule() -> None:
    stroke = _mask((100, 60, 100, 140), width=6)
    grain = (np.random.default_rng(0).random((SIDE, SIDE)) < 0.5).astype(np.uint8)
    assert ink._in_a_haze(stroke, stroke | grain)
    assert not ink._in_a_haze(stroke, stroke | _mask((130, 60, 130, 140), width=6))
    ruled = np.zeros((SIDE, SIDE), bool)
    ruled[::4] = True  # ink on ruling lines is not a haze
    assert not ink._in_a_haze(stroke, stroke | ruled.astype(np.uint8), ruled)


def test_line_remnants_are_dropped_below_the_floor_but_not_a_crossing_stroke() -> None:
    ruled = np.zeros((SIDE, SIDE), bool)
    ruled[100:102] = True
    remnant = _mask((40, 101, 90, 101), width=2)
    stroke = _mask((150, 40, 150, 160))
    kept = ink._without_line_remnants(remnant | stroke, ruled, PARAMS)
    assert not kept[101, 60]
    assert kept[60, 150]


def test_a_faint_digit_grows_into_its_fainter_ink_but_not_into_a_shadow() -> None:
    chosen = _mask((100, 80, 100, 120))
    faint_rest = _mask((100, 60, 100, 140))
    assert ink._grow(chosen, faint_rest).sum() > chosen.sum()
    shadow = np.zeros_like(chosen)
    shadow[2:198, 2:198] = 1  # joined to it, but many times its size: a shadow
    assert (ink._grow(chosen, shadow | chosen) == chosen).all()


def test_choose_digit_skips_an_edge_and_a_hairline() -> None:
    digit = _mask(*SEVEN)
    edge = _mask((0, 10, 0, 190), width=3)  # along the frame
    hairline = _mask((20, 192, 190, 193), width=1)  # a fold, straight and thin
    chosen = ink._choose_digit(digit | edge | hairline)
    assert chosen is not None
    assert chosen[50, 100]
    assert not chosen[100, 0]
    assert not chosen[192, 100]
    assert ink._choose_digit(edge | hairline) is None


def test_choose_digit_refuses_a_hairline_broken_into_pieces() -> None:
    # A grid line's fragments in a row, each short enough to pass the hairline rule alone.
    pieces = [(100, 30 + 24 * i, 100, 50 + 24 * i) for i in range(6)]
    assert max(ink._elongation(_mask(pc, width=2)) for pc in pieces) < PARAMS.hairline_elongation
    assert ink._choose_digit(_mask(*pieces, width=2)) is None
    # A written 1 broken by the same gaps keeps a pen's width: a digit, all of its pieces.
    chosen = ink._choose_digit(_mask(*pieces, width=9))
    assert chosen is not None
    assert chosen[40, 100]
    assert chosen[160, 100]


def test_the_edge_rule_refuses_a_mark_with_paper_on_one_side_only() -> None:
    # A sheet (0.85) on a desk (0.45) left of x = 100, and the false ink flattening leaves on
    # the desk along the edge: the mark is as dark as the desk beside it.
    grey = np.full((SIDE, SIDE), 0.85, np.float32)
    grey[:, :100] = 0.45
    sliver = _mask((96, 30, 96, 170), width=4)
    assert ink._one_sided(sliver, grey)
    # A written 1 on that sheet, and one in a shadow's half: paper on both sides of each.
    one = _mask((150, 30, 150, 170), width=6)
    page = _page((150, 30, 150, 170))
    assert not ink._one_sided(one, page)
    shaded = page * np.where(np.arange(SIDE) < 150, 0.7, 1.0)[None, :].astype(np.float32)
    assert not ink._one_sided(one, shaded)


def test_ruling_lines_are_removed_and_a_crossing_stroke_kept() -> None:
    page = np.full((SIDE, SIDE), 0.9, np.float32)
    page[40::30, :] = 0.6  # ruling lines, fainter than the pen
    cv2.line(page, (100, 20), (100, 180), 0.15, 5)  # a 1 written across them
    flat = 1 - page / 0.9
    mask = (flat > 0.2).astype(np.uint8)
    kept, count, ruled = ink._remove_lines(mask, mask, flat, PARAMS)
    assert count == 6
    assert ruled is not None
    assert not kept[70, 20]  # a line away from the stroke is gone
    assert kept[40:161, 99].all()  # the stroke is whole, where it crossed the lines too


def test_the_line_fit_is_flat_for_one_column_and_not_tilted_by_a_stroke() -> None:
    assert ink._fit_line(np.array([5, 5, 5]), np.array([1, 2, 3]), PARAMS) == (0.0, 2.0)
    xs = np.arange(100)
    ys = np.full(100, 50.0)
    ys[40:45] = 60  # a pen stroke touching the line
    slope, intercept = ink._fit_line(xs, ys, PARAMS)
    assert abs(slope) < 1e-9
    assert intercept == pytest.approx(50.0)


def test_the_desk_is_found_and_a_shadow_is_not() -> None:
    small = np.full((96, 96), 0.85, np.float32)
    small[:, :12] = 0.35  # a desk along the left border, a sharp step to the page
    edges = ink._page_edges(small, (SIDE, SIDE), PARAMS)
    assert edges is not None
    assert edges[100, 5]
    assert not edges[100, 150]
    shadow = np.full((96, 96), 0.85, np.float32) * np.linspace(0.4, 1, 96, dtype=np.float32)
    assert ink._page_edges(shadow, (SIDE, SIDE), PARAMS) is None  # soft: a shadow, no desk
