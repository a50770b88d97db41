"""The digit's ink in a photo of paper: lighting flattened, ruling lines, specks and page edges
taken away, and the digit chosen among what is left. No FastAPI imports here.

The steps, each for a scene people photograph (docs/imaging.md tells the story and the
measurements):

1. Background: the paper's brightness is estimated on a small copy (a grey closing takes the
   paper's level over any stroke thinner than the kernel, a blur smooths it) and the image is
   divided by it: shadows, uneven light and tinted paper become flat white, ink becomes its
   contrast with the paper around it (0 = paper, 1 = black).
2. Threshold: the flattened image is smoothed at a stroke's scale (pencil's grain averages
   out), and ink is what stands above the paper's own noise (measured on the image, a robust
   spread), with a floor so that JPEG ringing and paper grain never count. Where nothing
   stands above that floor, a second look goes below it (faint pencil on clean paper), taking
   only a digit clear of the picture's border and of the ruling lines. Once the digit is
   chosen, it takes in the fainter ink joined to it: a faint stroke crosses the threshold only
   at its darkest points.
3. Lines: ruling and grid lines, and a margin line, are long, thin, straight and run across the
   page; a morphological opening with a long line kernel finds them (after a small dilation
   across them, so that a line tilted by a couple of degrees still fits), each is fitted and
   removed across the whole page, and the digit's strokes that crossed them are restored where
   ink continues on both sides of the line.
4. The page's edges: where a desk shows around the sheet (a darker surround along the
   picture's border, told apart by Otsu's threshold on a small copy, meeting the paper at a
   sharp step, unlike a shadow), ink along that edge is dropped: flattening the light leaves
   false ink there.
5. Components: what is left is cut into connected components; specks are dropped, and so is
   what cannot be a digit: anything touching two sides of the picture, a long thin stroke
   touching one, a mark touching one that is small for the picture (a digit cut by the frame
   is a close crop), a hairline straight enough to be a fold or an edge (whole, or as pieces
   in a row), two hairlines meeting at a right angle (a page's corner, a margin line meeting a
   ruling line). The digit is the component with the most ink near the centre (those touching
   the border count for less), merged with the pieces of a broken stroke around it. It is
   refused when the photo is lighter than it on one side only (the false ink along a sheet's
   edge, the desk on its other side), when it lies wholly along a ruling line (what the line's
   removal left), or when the paper around it is not clean (a haze of fainter ink: grain, a
   smudge, a texture).

OpenCV (headless) does the per-pixel work: its morphology with rectangular kernels, connected
components and resizing are several times faster than the same steps in NumPy or scikit-image
on this CPU (docs/imaging.md has the measurement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from app.errors import NoDigit
from app.ink_params import PARAMS, InkParams

# The service runs several preprocessing threads (DIGITSUM_PREPROCESS_THREADS); OpenCV's own
# pool inside each would only oversubscribe the CPUs.
cv2.setNumThreads(1)

WORK_SIDE = PARAMS.work_side  # app.imaging shrinks photos to this before calling digit_ink

# The names of the rules that refuse a photo (NoDigit.rule), in the order they are applied;
# the regression set (training/pipeline_regression.py) reports answers moved by each.
RULES = ("noise", "blank", "no_mark", "page_edge", "along_line", "haze")


@dataclass(frozen=True)
class Ink:
    """The digit's ink, (H, W) float32 in [0, 1] (0 outside the digit), and what was removed."""

    pixels: np.ndarray
    lines_removed: int


def digit_ink(grey: np.ndarray, params: InkParams = PARAMS) -> Ink:
    """The ink of the one digit in `grey`, (H, W) float32 in [0, 1], dark ink on light paper.

    Raises NoDigit, with a message a person understands and the rule that refused (RULES),
    when there is no ink, only noise, specks or ruling lines, or a mark that is not a written
    digit.
    """
    p = params
    small = _small_copy(grey, p)
    flat = _flatten(grey, small, p)
    raw_spread = _robust_spread(flat, p)
    if raw_spread > p.noisy:
        raise NoDigit(
            "I don't see a digit in this image: it looks like noise or a texture, not a page",
            field="image",
            rule="noise",
        )
    # Smoothed at about the scale of a pen's stroke on the working copy: pencil's grain and
    # a sensor's noise average out, a stroke does not. The threshold is set on what is left.
    ink = cv2.GaussianBlur(flat, (0, 0), p.grain_sigma * max(grey.shape) / p.work_side)
    spread = _robust_spread(ink, p)
    # Smoothing shrinks fine noise's spread more than it dims it: heavy sensor noise must
    # not pass for ink once smoothed, so ink also stands out of the unsmoothed noise.
    noise = max(p.noise_sigmas * spread, p.raw_noise_sigmas * raw_spread)
    edges = _page_edges(small, grey.shape, p)
    try:
        return _ink_above(grey, ink, noise, spread, edges, p, floor=p.ink_floor)
    except NoDigit as nothing:
        # Faint pencil on clean paper stays under the floor while standing far above the
        # paper's noise: look again below the floor, where the noise allows it.
        if noise >= p.ink_floor:
            raise
        try:
            return _ink_above(grey, ink, noise, spread, edges, p, floor=p.faint_floor)
        except NoDigit:
            raise nothing from None


def _ink_above(
    grey: np.ndarray,
    ink: np.ndarray,
    noise: float,
    spread: float,
    edges: np.ndarray | None,
    p: InkParams,
    *,
    floor: float,
) -> Ink:
    """The digit's ink where `ink` (the flattened, smoothed `grey`) stands above both `noise`
    and `floor`; raises NoDigit when none is found there. A look below the ink floor takes
    only a digit clear of the picture's border, where flattening the light is least sure.

    The steps, in order, each its own function: threshold, ruling lines (found on a fainter
    mask) and the desk removed, line remnants dropped below the floor, the digit chosen, then
    the chosen mark refused if it is a sheet's edge, lies along a line or in a haze, else a
    faint one grown."""
    threshold = max(noise, floor)
    below_floor = floor < p.ink_floor
    mask = (ink > threshold).astype(np.uint8)
    if not mask.any():
        raise NoDigit(
            "I don't see a digit in this image: it looks blank", field="image", rule="blank"
        )
    faint = _faint_mask(ink, threshold, spread, p)
    mask, lines, ruled = _remove_lines(mask, faint, ink, p)
    if edges is not None:
        mask[edges] = 0
    if below_floor and ruled is not None:
        mask = _without_line_remnants(mask, ruled, p)
    chosen = _choose_digit(mask, p, inner=below_floor)
    if chosen is None:
        raise _nothing_there(lines, edges, p, rule="no_mark")
    if _one_sided(chosen, grey, p):
        raise NoDigit(
            "I don't see a digit in this image: I see the edge of a sheet of paper",
            field="image",
            rule="page_edge",
        )
    if ruled is not None and _along_lines(chosen, ruled, p):
        raise _nothing_there(lines, edges, p, rule="along_line")
    if _in_a_haze(chosen, faint, ruled, edges, p):
        raise NoDigit(
            "I don't see a digit in this image: what I see is a smudge, a texture or a "
            "scribble, not a written digit on clean paper",
            field="image",
            rule="haze",
        )
    strong = float(np.percentile(ink[chosen.astype(bool)], p.faint_digit_percentile))
    if strong < p.faint_digit * threshold:
        chosen = _grown_faint(chosen, ink, threshold, noise, ruled, edges, p)
    return Ink(_soft_digit(chosen, ink, threshold, strong, p), lines)


def _faint_mask(ink: np.ndarray, threshold: float, spread: float, p: InkParams) -> np.ndarray:
    """uint8 0/1: the fainter ink, where ruling lines are unbroken and a haze shows."""
    faint: np.ndarray = (ink > max(threshold * p.faint_look, p.faint_look_sigmas * spread)).astype(
        np.uint8
    )
    return faint


def _without_line_remnants(mask: np.ndarray, ruled: np.ndarray, p: InkParams) -> np.ndarray:
    """Below the floor, what is left of a ruling line or a page's edge looks like a stroke:
    the components of `mask` lying mostly along the lines `ruled` are dropped (a digit only
    crosses them)."""
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    along = _near_lines(ruled, p)
    on_lines = np.bincount(labels[along], minlength=count)
    remnant = on_lines > p.remnant_on_lines * np.bincount(labels.ravel(), minlength=count)
    remnant[0] = False
    mask[remnant[labels]] = 0
    return mask


def _nothing_there(lines: int, edges: np.ndarray | None, p: InkParams, *, rule: str) -> NoDigit:
    """No mark is a digit: what the picture shows instead, as a person would say it."""
    if edges is not None:  # the lines found were the page's own edges, perhaps
        what = "a blank page" + (" with ruling lines" if lines > p.ruled_page_lines else "")
    else:
        what = "only ruling lines" if lines else "only specks or noise"
    return NoDigit(f"I don't see a digit in this image: I see {what}", field="image", rule=rule)


def _grown_faint(
    chosen: np.ndarray,
    ink: np.ndarray,
    threshold: float,
    noise: float,
    ruled: np.ndarray | None,
    edges: np.ndarray | None,
    p: InkParams,
) -> np.ndarray:
    """A faint stroke crosses the threshold only at its darkest: the digit takes in the
    fainter ink joined to it (above the paper's noise; not along a ruling line or the page's
    edge)."""
    weak = (ink > max(p.grow * threshold, noise)).astype(np.uint8)
    if ruled is not None:
        weak[ruled] = 0
        weak |= _across(weak, p) & ruled
    if edges is not None:
        weak[edges] = 0
    return _grow(chosen, weak, p)


def _soft_digit(
    chosen: np.ndarray, ink: np.ndarray, threshold: float, strong: float, p: InkParams
) -> np.ndarray:
    """The chosen mark's ink with its soft edges kept (the strokes' antialiasing), everything
    else of the page cleared, stretched so that its strong strokes reach 1."""
    region = cv2.dilate(chosen, np.ones((3, 3), np.uint8)).astype(bool)  # one pixel of rim
    digit = np.where(region, ink, 0.0).astype(np.float32)
    low = threshold * p.rim_level  # what maps to 0: the antialiased rim fades out, no step
    out: np.ndarray = np.clip((digit - low) / max(strong - low, 1e-3), 0.0, 1.0)
    return out


def _near_lines(ruled: np.ndarray, p: InkParams = PARAMS) -> np.ndarray:
    """Within `line_reach` pixels of the ruling lines `ruled` (bool): what counts as lying
    along one."""
    side = 2 * p.line_reach + 1
    near: np.ndarray = cv2.dilate(ruled.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    return near


def _one_sided(chosen: np.ndarray, grey: np.ndarray, p: InkParams = PARAMS) -> bool:
    """The edge rule: whether the photo (`grey`, dark ink on light paper) is lighter than the
    mark (`chosen`, uint8 0/1) on one side of it only, across its main axis: the false ink that
    flattening leaves along a sheet's edge where the desk was not found (_page_edges), with the
    desk on its other side. A stroke has paper on both sides, even in a shadow."""
    rows, cols = _box_around(chosen, 0)  # the mark's own box: no scan of the whole picture
    ys, xs = np.nonzero(chosen[rows, cols])
    ys, xs = ys + rows.start, xs + cols.start
    points = np.stack([xs, ys], 1).astype(np.float64)
    centre = points.mean(0)
    direction = np.linalg.svd(points - centre, full_matrices=False)[2][0]
    normal = np.array([-direction[1], direction[0]])
    along = (points - centre) @ direction
    width = len(points) / (float(along.max() - along.min()) + 1)  # area / length
    height, wide = grey.shape
    mark = float(np.median(grey[ys, xs]))
    contrasts = []
    for sign in (1.0, -1.0):
        beside = np.rint(points + sign * (width + p.side_gap) * normal).astype(np.int64)
        inside = (beside[:, 0] >= 0) & (beside[:, 0] < wide) & (beside[:, 1] >= 0)
        beside = beside[inside & (beside[:, 1] < height)]
        beside = beside[chosen[beside[:, 1], beside[:, 0]] == 0]
        if not len(beside):  # at the frame, or a closed shape all round: no side to read
            return False
        contrasts.append(float(np.median(grey[beside[:, 1], beside[:, 0]])) - mark)
    weak, strong = sorted(contrasts)
    return strong >= p.side_contrast and weak < p.side_ratio * strong


def _box_around(chosen: np.ndarray, reach: int) -> tuple[slice, slice]:
    """The box of `chosen`'s non-zero pixels grown by `reach` on every side, within the image."""
    height, width = chosen.shape
    left, top, w, h = cv2.boundingRect(chosen)
    return (
        slice(max(0, top - reach), min(height, top + h + reach)),
        slice(max(0, left - reach), min(width, left + w + reach)),
    )


def _along_lines(chosen: np.ndarray, ruled: np.ndarray, p: InkParams = PARAMS) -> bool:
    """The along-line rule: whether `chosen` (uint8 0/1) lies wholly along the ruling lines
    `ruled` (bool), what their removal left where they were doubled, crossed or broken."""
    box = _box_around(chosen, p.line_reach)  # around the mark only: as far as _near_lines reaches
    return float(_near_lines(ruled[box], p)[chosen[box] > 0].mean()) >= p.along_line


def _in_a_haze(
    chosen: np.ndarray,
    faint: np.ndarray,
    ruled: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    p: InkParams = PARAMS,
) -> bool:
    """The haze rule: whether the margin around `chosen` (uint8 0/1), `haze_margin` of its
    size wide, has more than `haze` of its pixels inked in `faint` (uint8 0/1: the fainter
    ink), where no ruling line (`ruled`) runs and no desk (`edges`) lies (both bool, or None)."""
    _, _, w, h = cv2.boundingRect(chosen)
    box = _box_around(chosen, int(max(w, h) * p.haze_margin))
    # The digit's own soft rim is not its surroundings.
    k = max(3, int(p.haze_rim * max(w, h)) | 1)
    margin = cv2.dilate(chosen[box], np.ones((k, k), np.uint8)) == 0
    inked = faint[box] > 0
    for cleared in (ruled, edges):
        if cleared is not None:
            inked &= ~cleared[box]
    return bool(margin.any()) and float(inked[margin].mean()) > p.haze


def _grow(chosen: np.ndarray, weak: np.ndarray, p: InkParams = PARAMS) -> np.ndarray:
    """`chosen` (uint8 0/1) and what of `weak` is joined to it; `chosen` alone when that
    would make it more than `grow_limit` times larger or take it to the picture's border (a
    shadow or a fold, not the rest of a faint digit)."""
    count, labels = cv2.connectedComponents(chosen | weak, connectivity=8)
    joined = np.zeros(count, bool)
    joined[labels[chosen > 0]] = True
    joined[0] = False
    grown = joined[labels].astype(np.uint8)
    height, width = chosen.shape
    left, top, w, h = cv2.boundingRect(chosen)  # the box of the non-zero pixels
    g_left, g_top, g_w, g_h = cv2.boundingRect(grown)
    reaches_border = (
        (g_top == 0 < top)
        or (g_left == 0 < left)
        or (g_top + g_h == height > top + h)
        or (g_left + g_w == width > left + w)
    )
    if max(g_w, g_h) > p.grow_limit * max(w, h) or reaches_border:
        return chosen
    return grown


def _small_copy(grey: np.ndarray, p: InkParams) -> np.ndarray:
    """`grey` with its longer side `background_side` (area-averaged): where the paper's level
    and the desk around it are estimated."""
    height, width = grey.shape
    scale = p.background_side / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small: np.ndarray = cv2.resize(grey, small_size, interpolation=cv2.INTER_AREA)
    return small


def _flatten(grey: np.ndarray, small: np.ndarray, p: InkParams) -> np.ndarray:
    """1 - grey / paper: (H, W) float32, 0 where the paper is, up to 1 for black ink; the
    paper's level is estimated on `small` (_small_copy of `grey`)."""
    height, width = grey.shape
    k = max(3, round(p.background_kernel * p.background_side) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.GaussianBlur(paper, (k, k), 0, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)
    flat = 1.0 - grey / np.maximum(paper, 1e-3)
    out: np.ndarray = np.clip(flat, 0.0, 1.0, out=flat)
    return out


def _page_edges(small: np.ndarray, shape: tuple[int, ...], p: InkParams) -> np.ndarray | None:
    """`shape` (H, W) bool, found on `small` (_small_copy of the photo): the desk around the
    sheet of paper and a band along the sheet's edges; None when no desk shows (the paper
    fills the picture, or what is darker is a shadow or a blot).

    Flattening the light leaves false ink along such an edge (the estimate of the paper's
    level spills over it), which otherwise passes for a 1 on a blank page or joins the digit.
    """
    height, width = shape
    # Strokes are thin on this copy: a closing leaves paper and desk.
    small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((p.desk_closing,) * 2, np.uint8))
    levels = np.clip(small * 255.0, 0, 255).astype(np.uint8)
    _, light = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = (light == 0).astype(np.uint8)
    share = float(dark.mean())
    if share < p.desk_share or share > p.desk_max_share:
        return None
    contrast = float(small[light == 1].mean()) - float(small[dark == 1].mean())
    if contrast < p.desk_contrast:
        return None
    # The desk runs along the picture's border; a digit or a blot that touches it does so
    # over a small part of its outline.
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    border = np.zeros(dark.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    on_border = np.bincount(labels[border], minlength=count)
    outline = np.bincount(
        labels[cv2.morphologyEx(dark, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0],
        minlength=count,
    )
    desk = on_border >= p.desk_border * np.maximum(outline, 1)
    desk[0] = False  # the light part
    if not desk.any():
        return None
    # A desk meets the paper at a sharp step, a shadow at a soft rim: the median grey slope
    # along each one's rim, per unit of contrast (Sobel's slope is 8x the change per pixel).
    slope = np.hypot(
        cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    ) / (8 * contrast)
    grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
    rim = (light == 1) & desk[grown]  # paper next to a desk candidate: its edge
    steep = np.bincount(grown[rim], weights=slope[rim] >= p.desk_edge, minlength=count)
    desk &= steep >= p.desk_steep * np.maximum(np.bincount(grown[rim], minlength=count), 1)
    edge = rim & desk[grown] & (slope >= p.desk_edge)
    if not edge.any():
        return None
    # The band along that edge, and the desk itself: no digit is written there.
    band = cv2.dilate(edge.astype(np.uint8), np.ones((2 * p.page_margin + 1,) * 2, np.uint8))
    band = np.maximum(band, desk[labels].astype(np.uint8))
    edges: np.ndarray = cv2.resize(band, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return edges


def _robust_spread(ink: np.ndarray, p: InkParams) -> float:
    """The paper's noise: a robust standard deviation (MAD) of the flattened image in each
    cell of a 4x4 grid, the lower quartile of the cells (the ink, and a desk or a page edge
    in the outer cells, hardly move it); on a subsample (a few hundred pixels per cell are
    plenty for a median), all cells at once."""
    step = max(2, max(ink.shape) // p.spread_cells)
    sample = ink[::step, ::step]
    height, width = sample.shape
    n = p.spread_grid
    ch, cw = height // n, width // n
    if ch == 0 or cw == 0:  # too small for a grid: one cell
        cells = sample.reshape(1, -1)
    else:  # (n * n, ch * cw); the last rows and columns (fewer than n) left out
        grid = sample[: n * ch, : n * cw].reshape(n, ch, n, cw)
        cells = grid.transpose(0, 2, 1, 3).reshape(n * n, ch * cw)
    centre = np.median(cells, axis=1, keepdims=True)
    spreads = np.median(np.abs(cells - centre), axis=1)
    return 1.4826 * float(np.percentile(spreads, p.spread_quantile))  # MAD to std dev


def _remove_lines(
    mask: np.ndarray, faint: np.ndarray, ink: np.ndarray, p: InkParams
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """`mask` without the ruling lines (horizontal and vertical) found in `faint`, the
    strokes that crossed them or ran along them restored; how many lines were removed, and
    where they run (bool, None when there are none)."""
    level = np.zeros(mask.shape, np.float32)  # each line's own ink level, 0 off the lines
    count = 0
    for horizontal in (True, False):
        if horizontal:
            lines = _line_mask(faint, ink, p)
        else:
            lines = _line_mask(np.ascontiguousarray(faint.T), np.ascontiguousarray(ink.T), p)
        if lines is None:
            continue
        line_level, found = lines
        np.maximum(level, line_level if horizontal else line_level.T, out=level)
        count += found
    if not count:
        return mask, 0, None
    # A pen stroke along a line (a 7's bar) is darker than the printed line: it stays.
    darker = ink > np.maximum(p.line_ink_ratio * level, level + p.line_ink_margin)
    removed = ((level > 0) & ~darker).astype(np.uint8)
    kept = mask & ~removed
    return kept | (_across(kept, p) & removed & mask), count, level > 0


def _across(mask: np.ndarray, p: InkParams) -> np.ndarray:
    """`mask` with its gaps across a ruling line closed (a stroke that crosses a line goes on
    on both sides of it)."""
    closed: np.ndarray = np.maximum(
        cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((p.across_gap, 1), np.uint8)),
        cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, p.across_gap), np.uint8)),
    )
    return closed


def _line_mask(mask: np.ndarray, ink: np.ndarray, p: InkParams) -> tuple[np.ndarray, int] | None:
    """Horizontal lines of `mask` (rows), each fitted and drawn across the whole width with a
    margin, valued with its median ink; None if there are none."""
    height, width = mask.shape
    # A line across the page puts that much ink in some band of rows, even tilted across a
    # few bands; photos without lines mostly have no such band, and skip the opening.
    rows = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
    bands = np.add.reduceat(rows, np.arange(0, height, p.line_band))
    if int(bands.max()) < p.line_span * width / 4:
        return None
    length = max(p.line_kernel_min, round(width * p.line_span * p.line_kernel))
    # Across the line, tolerate a tilt of about 2 degrees; along it, bridge small breaks.
    thick = cv2.dilate(mask, np.ones((p.line_tilt, p.line_tilt), np.uint8))
    opened = cv2.morphologyEx(thick, cv2.MORPH_OPEN, np.ones((1, length), np.uint8)) & mask
    if not opened.any():
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    lines: list[tuple[float, float, int, int, float]] = []  # slope, intercept, thickness, span, ink
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if w < width * p.line_span or h > max(
            p.line_max_thickness, height // p.line_thickness_divisor
        ):
            continue
        ys, xs = np.nonzero(labels[y : y + h, x : x + w] == label)
        slope, intercept = _fit_line(xs + x, ys + y, p)
        level = float(np.median(ink[ys + y, xs + x]))
        lines.append((slope, intercept, max(1, round(area / w)), int(w), level))
    if len(lines) == 1:
        # One long straight stroke alone may be the digit itself (a 1, a 7's stem in a close
        # crop); a lone ruling line (a margin line, the last line of a page) runs edge to edge
        # or lies away from the middle, where nobody writes the digit they photograph.
        slope, intercept, _, span, _ = lines[0]
        middle = slope * width / 2 + intercept
        if (
            span < p.lone_line_span * width
            and abs(middle - height / 2) < p.lone_line_middle * height
        ):
            return None
    out = np.zeros((height, width), np.float32)
    for slope, intercept, thickness, _, level in lines:
        ends = [(0, intercept), (width - 1, slope * (width - 1) + intercept)]
        p0, p1 = ((round(a), round(float(b))) for a, b in ends)
        cv2.line(out, p0, p1, max(level, 1e-3), thickness + p.line_margin)
    return (out, len(lines)) if lines else None


def _fit_line(xs: np.ndarray, ys: np.ndarray, p: InkParams = PARAMS) -> tuple[float, float]:
    """y = slope * x + intercept through a line's pixels, refitted without those more than
    `line_fit_tolerance` pixels off: a pen stroke touching the line must not tilt it."""
    keep = np.ones(xs.size, bool)
    slope, intercept = 0.0, float(np.median(ys))
    for _ in range(p.line_fit_rounds):
        if np.ptp(xs[keep]) == 0:  # one column (or one point): no slope to fit, a flat line
            return 0.0, float(np.median(ys[keep]))
        slope, intercept = (float(v) for v in np.polyfit(xs[keep], ys[keep], 1))
        near = np.abs(ys - (slope * xs + intercept)) <= p.line_fit_tolerance
        if near.sum() < 2 or (near == keep).all():
            break
        keep = near
    return slope, intercept


def _elongation(pixels: np.ndarray) -> float:
    """A component's length over its mean width: the square root of the ratio of its second
    moments' principal values (a straight stroke of length L and width w has L / w)."""
    moments = cv2.moments(pixels.astype(np.uint8), binaryImage=True)
    if moments["m00"] < 2:
        return 1.0
    a, b, c = moments["mu20"], moments["mu11"], moments["mu02"]
    root = float(np.sqrt(4 * b * b + (a - c) ** 2))
    major, minor = (a + c + root) / 2, (a + c - root) / 2
    # One pixel of width at least (a one-pixel line has minor moment ~ L/12, not 0)
    return float(np.sqrt(major / max(minor, moments["m00"] / 12)))


class _Arm(NamedTuple):
    on_line: np.ndarray  # (N,) bool: which of the points lie on it
    centre: np.ndarray  # (2,) the mean of those points
    direction: np.ndarray  # (2,) unit vector
    start: float  # where along it, from the centre, its pixels start and end
    end: float


def _straight_arm(points: np.ndarray, p: InkParams) -> _Arm | None:
    """The straight line through most of `points` ((N, 2) x, y), found among lines through
    pairs of them (seeded, so the same image always gives the same answer), refitted to its
    pixels."""
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(points), (2, p.corner_pairs))
    step = points[second] - points[first]
    length = np.hypot(step[:, 0], step[:, 1])
    usable = length > 2 * p.corner_tolerance
    if not usable.any():
        return None
    normals = np.stack([-step[usable, 1], step[usable, 0]], 1) / length[usable, None]
    offsets = np.abs((points[None] - points[first[usable], None]) * normals[:, None]).sum(-1)
    best = int((offsets <= p.corner_tolerance).sum(1).argmax())
    on_line = offsets[best] <= p.corner_tolerance
    centre = points[on_line].mean(0)
    direction = np.linalg.svd(points[on_line] - centre, full_matrices=False)[2][0]
    normal = np.array([-direction[1], direction[0]])
    on_line = np.abs((points - centre) @ normal) <= p.corner_tolerance
    if not on_line.any():  # the refitted line runs between two clusters: no arm
        return None
    centre = points[on_line].mean(0)
    along = (points[on_line] - centre) @ direction
    return _Arm(on_line, centre, direction, float(along.min()), float(along.max()))


def _hairline_corner(pixels: np.ndarray, p: InkParams = PARAMS) -> bool:
    """The corner rule: whether a component (bool) is two straight hairlines at a right angle
    that meet at their ends (`corner_ratio`): an L, never a T or a 7's slanted stem."""
    area = int(pixels.sum())
    height, width = pixels.shape
    # Length over width can reach corner_ratio only if the bounding box's does (cheap).
    if (height + width) ** 2 < p.corner_ratio * area:
        return False
    ys, xs = np.nonzero(pixels)
    points = np.stack([xs, ys], 1).astype(np.float64)
    first = _straight_arm(points, p)
    if first is None:
        return False
    rest = points[~first.on_line]
    second = _straight_arm(rest, p) if len(rest) > 2 else None
    if second is None or first.on_line.sum() + second.on_line.sum() < p.corner_cover * area:
        return False
    cosine = abs(float(first.direction @ second.direction))
    if np.degrees(np.arccos(min(1.0, cosine))) < p.corner_angle:
        return False
    lengths = [arm.end - arm.start + 1 for arm in (first, second)]
    if sum(lengths) ** 2 < p.corner_ratio * area:  # length over mean width (area / length)
        return False
    # Where the two lines cross, along each arm from its centre: near one of its ends.
    crossing = np.linalg.solve(
        np.stack([first.direction, -second.direction], 1), second.centre - first.centre
    )
    for arm, at, length in zip((first, second), crossing, lengths, strict=True):
        if min(abs(at - arm.start), abs(at - arm.end)) > p.corner_end * length:
            return False
    return True


def _choose_digit(
    mask: np.ndarray, p: InkParams = PARAMS, *, inner: bool = False
) -> np.ndarray | None:
    """The digit's pixels (uint8 0/1): the best component and the pieces around it; None
    when nothing but specks is left (or, if `inner`, nothing clear of the border)."""
    height, width = mask.shape
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    w, h = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    big_enough = areas >= p.speck * height * width
    if not big_enough.any():
        return None
    sides = (x == 0).astype(int) + (y == 0) + (x + w == width) + (y + h == height)
    touches = sides > 0
    # Touching two sides of the picture: a page's edge or corner, the desk, a shadow's rim;
    # never the digit (a digit cut by the frame touches one side, and fills much of it).
    big_enough &= sides < (1 if inner else 2)
    big_enough &= ~touches | (np.maximum(w, h) >= p.edge_digit_side * max(height, width))
    if not big_enough.any():
        return None
    dx = (centroids[1:, 0] - width / 2) / width
    dy = (centroids[1:, 1] - height / 2) / height
    score = (
        areas
        * np.exp(-p.centre_weight * (dx**2 + dy**2))
        * np.where(touches, p.edge_score, 1.0)
        * big_enough
    )
    # The best-scoring component that has a digit's shape; edges and hairlines step aside.
    for best in np.argsort(-score, kind="stable"):
        if score[best] <= 0:
            return None
        bx, by, bw, bh = int(x[best]), int(y[best]), int(w[best]), int(h[best])
        component = labels[by : by + bh, bx : bx + bw] == best + 1
        limit = p.edge_elongation if touches[best] else p.hairline_elongation
        if _elongation(component) <= limit and not _hairline_corner(component, p):
            break
    else:
        return None
    best = int(best)
    side = max(w[best], h[best])
    if side < p.min_digit_side * max(height, width):
        return None
    reach = p.piece_reach * side
    left, top = x[best] - reach, y[best] - reach
    right, bottom = x[best] + w[best] + reach, y[best] + h[best] + reach
    near = (
        (x + w >= left)
        & (x <= right)
        & (y + h >= top)
        & (y <= bottom)
        & (areas >= p.piece_area * areas[best])
        & ~touches
    )
    near[best] = True
    keep = np.zeros(count, np.uint8)
    keep[1:][near] = 1
    chosen: np.ndarray = keep[labels]
    # A broken ruling line's pieces gather into one straight hairline, as thin and straight as
    # a whole one that the loop above passes over: the hairline rule holds for them together.
    if near.sum() > 1 and _elongation(chosen) > p.hairline_elongation:
        return None
    return chosen
