"""Every tuned number of the photo pipeline (app/ink.py), in one frozen object: its value, its
unit and a one-line reason. docs/imaging.md tells how each was measured.

Change one with `dataclasses.replace(PARAMS, name=value)` and pass it to `app.ink.digit_ink`;
`python -m training.pipeline_regression --check` then says which answers of the committed
regression set it moved, and which rule moved them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def tuned(value: Any, unit: str, why: str) -> Any:
    """A dataclass field holding a tuned number, its unit and the reason for it."""
    return field(default=value, metadata={"unit": unit, "why": why})


@dataclass(frozen=True)
class InkParams:
    """The photo pipeline's tuned numbers, grouped by the step that uses them."""

    # --- sizes
    work_side: int = tuned(512, "px", "photos are shrunk to this longer side before any step")
    background_side: int = tuned(
        96, "px", "the paper's level and the desk are estimated on a copy this size"
    )
    # --- 1. background: the paper's level
    background_kernel: float = tuned(
        0.2, "share of the small copy's side", "a closing this wide takes the paper over strokes"
    )
    # --- 2. threshold: what is ink
    grain_sigma: float = tuned(
        1.6, "px at work_side", "smoothing at a stroke's scale: pencil grain averages out"
    )
    noise_sigmas: float = tuned(
        5.0, "robust std devs", "ink stands this far above the paper's smoothed noise"
    )
    raw_noise_sigmas: float = tuned(
        2.5, "robust std devs", "and this far above its unsmoothed noise (heavy sensor noise)"
    )
    ink_floor: float = tuned(
        0.1, "share of the paper's level", "never ink below: JPEG ringing, paper grain"
    )
    faint_floor: float = tuned(
        0.07, "share of the paper's level", "the second look, for faint pencil on clean paper"
    )
    noisy: float = tuned(
        0.12, "robust std dev of the flattened image", "above it: noise or a texture, no page"
    )
    faint_look: float = tuned(
        0.5, "times the threshold", "ruling lines are found on a mask this much fainter"
    )
    faint_look_sigmas: float = tuned(
        3.0, "robust std devs", "but never fainter than this above the smoothed noise"
    )
    spread_cells: int = tuned(
        128, "samples per side", "the noise is measured on a subsample this dense"
    )
    spread_grid: int = tuned(4, "cells per side", "the noise is the lower quartile of these cells")
    spread_quantile: float = tuned(
        25.0, "percentile of the cells", "ink, a desk or an edge in some cells hardly moves it"
    )
    # --- 3. ruling lines
    line_span: float = tuned(
        0.75, "share of the image's width", "a ruling line runs across at least this much"
    )
    line_band: int = tuned(
        8, "rows", "a line across the page fills such a band (the cheap test before an opening)"
    )
    line_kernel: float = tuned(
        2 / 3, "share of line_span's width", "the opening's length: bridges a line's breaks"
    )
    line_kernel_min: int = tuned(8, "px", "the opening's shortest length, on small images")
    line_tilt: int = tuned(5, "px", "a dilation this wide lets a line tilted ~2 degrees fit")
    line_max_thickness: int = tuned(6, "px", "a component thicker than this is not a line")
    line_thickness_divisor: int = tuned(
        6, "parts of the image's height", "or than one such part, on large images"
    )
    lone_line_span: float = tuned(
        0.95, "share of the width", "a lone line shorter than this, in the middle, may be a 1"
    )
    lone_line_middle: float = tuned(
        0.2, "share of the height", "the middle band where the photographed digit is written"
    )
    line_margin: int = tuned(2, "px", "a line is drawn this much thicker than measured")
    line_fit_tolerance: float = tuned(
        2.0, "px", "pixels further off the fitted line are a pen stroke touching it"
    )
    line_fit_rounds: int = tuned(3, "fits", "refits without the pixels off the line")
    line_ink_ratio: float = tuned(
        1.6, "times the line's ink", "ink on a line this much darker is a pen stroke"
    )
    line_ink_margin: float = tuned(
        0.15, "share of the paper's level", "and at least this much darker than the line"
    )
    across_gap: int = tuned(
        9, "px", "a stroke's gap across a line this long is closed (it goes on both sides)"
    )
    line_reach: int = tuned(
        2, "px", "within this of a ruling line is along it (the remnant and along-line rules)"
    )
    remnant_on_lines: float = tuned(
        0.5, "share of a mark's pixels", "below the floor, a mark this much along lines is left"
    )
    ruled_page_lines: int = tuned(
        4, "lines", "more lines than this on a blank page: 'with ruling lines'"
    )
    # --- 4. the page's edges: a desk around the sheet
    desk_closing: int = tuned(9, "px of the small copy", "strokes vanish, paper and desk stay")
    desk_contrast: float = tuned(
        0.2, "grey level 0..1", "a desk is at least this much darker than the page"
    )
    desk_share: float = tuned(0.02, "share of the picture", "a desk shows at least this much")
    desk_max_share: float = tuned(
        0.8, "share of the picture", "more than this dark is a dark picture, not a desk"
    )
    desk_edge: float = tuned(
        0.2,
        "grey slope per unit of contrast",
        "a sheet's edge falls within a pixel or two; a shadow's rim is soft",
    )
    desk_steep: float = tuned(
        0.5, "share of the rim", "a desk's rim is steep along at least this much of it"
    )
    desk_border: float = tuned(
        0.15, "share of its outline", "a desk lies along the picture's border this much"
    )
    page_margin: int = tuned(
        2, "px of the small copy", "ink this close to the sheet's edge is the edge"
    )
    # --- 5. components: which one is the digit
    speck: float = tuned(0.0004, "share of the image's area", "smaller components are specks")
    min_digit_side: float = tuned(
        0.04, "share of the image's longer side", "the digit's larger side is at least this"
    )
    edge_digit_side: float = tuned(
        0.15,
        "share of the image's longer side",
        "a mark at the frame smaller than this is a rim; a digit cut by it is a close crop",
    )
    centre_weight: float = tuned(
        4.0, "per squared share of the side", "how fast a component's score falls off-centre"
    )
    edge_score: float = tuned(
        0.15, "factor", "a component touching the frame scores this share of its ink"
    )
    piece_reach: float = tuned(
        0.35, "share of the digit's size", "pieces this near are the digit's broken strokes"
    )
    piece_area: float = tuned(
        0.02, "share of the digit's area", "smaller pieces near it are specks, not strokes"
    )
    edge_elongation: float = tuned(
        5.0, "length / width", "a stroke at the frame longer than a digit's is an edge"
    )
    hairline_elongation: float = tuned(
        20.0, "length / width", "nothing this straight and thin is a digit (a fold, a rim)"
    )
    corner_ratio: float = tuned(
        50.0, "length / width of both arms", "an L of hairlines: a page's corner, not a 7"
    )
    corner_angle: float = tuned(80.0, "degrees", "the arms of a corner meet at least this square")
    corner_tolerance: float = tuned(2.0, "px", "how far off its line an arm's pixel may be")
    corner_cover: float = tuned(0.95, "share of the mark", "the two arms hold this much of it")
    corner_end: float = tuned(
        0.2, "share of an arm's length", "the arms meet this near their ends (an L, not a T)"
    )
    corner_pairs: int = tuned(64, "pairs of points", "candidate lines tried for an arm")
    # --- 6. the chosen mark: refused, or grown
    along_line: float = tuned(
        0.99, "share of the mark's pixels", "a mark this much along a line is what it left"
    )
    side_gap: float = tuned(
        3.0, "px beyond the mark's width", "where the paper beside a stroke is read, clear of it"
    )
    side_contrast: float = tuned(
        0.05, "grey level 0..1", "less lighter than the mark on both sides: nothing to compare"
    )
    side_ratio: float = tuned(
        0.2,
        "share of the lighter side's contrast",
        "paper lies on both sides of a stroke; a sheet's edge has the desk on one",
    )
    haze: float = tuned(0.3, "share of the margin inked", "a written digit stands on clean paper")
    haze_margin: float = tuned(
        0.5, "share of the mark's size", "the margin around the mark that must be clean"
    )
    haze_rim: float = tuned(
        0.15, "share of the mark's size", "the mark's own soft rim is not its margin"
    )
    faint_digit: float = tuned(
        3.0, "times the threshold", "a digit fainter than this takes in the ink joined to it"
    )
    faint_digit_percentile: float = tuned(
        90.0, "percentile of the mark's ink", "a stroke's strength, its darkest tenth aside"
    )
    grow: float = tuned(
        0.6, "times the threshold", "the faint ink a faint digit takes in, down to this"
    )
    grow_limit: float = tuned(
        4.0, "times the mark's size", "growing larger than this is a shadow, not a stroke"
    )
    rim_level: float = tuned(
        0.5, "times the threshold", "ink at this maps to 0: the antialiased rim fades out"
    )


PARAMS = InkParams()


def describe(params: InkParams = PARAMS) -> list[tuple[str, Any, str, str]]:
    """(name, value, unit, why) for every tuned number, in their order."""
    return [
        (f.name, getattr(params, f.name), f.metadata["unit"], f.metadata["why"])
        for f in fields(params)
    ]
