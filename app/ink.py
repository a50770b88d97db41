"""The digit's ink in a photo of paper: lighting flattened, ruling lines, specks and page edges
taken away, and the digit chosen among what is left. No FastAPI imports here.

The steps, each for a scene people photograph (docs/imaging.md tells the story and the
measurements):

1. Background: the paper's brightness is estimated on a small copy (a grey closing takes the
   paper's level over any stroke thinner than the kernel, a blur smooths it) and the image is
   divided by it: shadows, uneven light and tinted paper become flat white, ink becomes its
   contrast with the paper around it (0 = paper, 1 = black).
2. Threshold: ink is what stands above the paper's own noise (measured on the image, a robust
   spread), with a floor so that JPEG ringing and paper grain never count.
3. Lines: ruling and grid lines, and a margin line, are long, thin, straight and run across the
   page; a morphological opening with a long line kernel finds them (after a small dilation
   across them, so that a line tilted by a couple of degrees still fits), each is fitted and
   removed across the whole page, and the digit's strokes that crossed them are restored where
   ink continues on both sides of the line.
4. Components: what is left is cut into connected components; specks are dropped, and the
   digit is the component with the most ink near the centre (those touching the border count
   for less: page edges, the desk), merged with the pieces of a broken stroke around it.

OpenCV (headless) does the per-pixel work: its morphology with rectangular kernels, connected
components and resizing are several times faster than the same steps in NumPy or scikit-image
on this CPU (docs/imaging.md has the measurement).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.errors import NoDigit

# The service runs several preprocessing threads (DIGITSUM_PREPROCESS_THREADS); OpenCV's own
# pool inside each would only oversubscribe the CPUs.
cv2.setNumThreads(1)

BACKGROUND_SIDE = 96  # the paper's brightness is estimated on a copy this size
BACKGROUND_KERNEL = 0.2  # closing kernel, as a share of the small copy's longer side
NOISE_SIGMAS = 5.0  # ink stands this many robust standard deviations above the paper's noise
INK_FLOOR = 0.1  # and at least this much darker than the paper (a tenth of its brightness)
NOISY = 0.12  # a robust spread of the flattened image above this: noise or texture, no page
LINE_SPAN = 0.75  # a ruling line runs across at least this share of the image
LINE_INK_RATIO = 1.6  # ink on a line this much darker than the line is a pen stroke
EDGE_SPAN = 0.4  # a component touching the border and longer than this share is the page's edge
SPECK = 0.0004  # components under this share of the image's area are specks
MIN_DIGIT_SIDE = 0.04  # the digit's larger side is at least this share of the image's
PIECE_REACH = 0.35  # pieces within this share of the digit's size around it are its own


@dataclass(frozen=True)
class Ink:
    """The digit's ink, (H, W) float32 in [0, 1] (0 outside the digit), and what was removed."""

    pixels: np.ndarray
    lines_removed: int


def digit_ink(grey: np.ndarray) -> Ink:
    """The ink of the one digit in `grey`, (H, W) float32 in [0, 1], dark ink on light paper.

    Raises NoDigit, with a message a person understands, when there is no ink, only noise,
    specks or ruling lines.
    """
    ink = _flatten(grey)
    spread = _robust_spread(ink)
    if spread > NOISY:
        raise NoDigit(
            "I don't see a digit in this image: it looks like noise or a texture, not a page",
            field="image",
        )
    threshold = max(NOISE_SIGMAS * spread, INK_FLOOR)
    mask = (ink > threshold).astype(np.uint8)
    if not mask.any():
        raise NoDigit("I don't see a digit in this image: it looks blank", field="image")
    # Ruling lines are found on a fainter mask, where they are unbroken.
    faint = (ink > max(threshold / 2, 3 * spread)).astype(np.uint8)
    mask, lines = _remove_lines(mask, faint, ink)
    chosen = _choose_digit(mask)
    if chosen is None:
        what = "only ruling lines" if lines else "only specks or noise"
        raise NoDigit(f"I don't see a digit in this image: I see {what}", field="image")
    # Soft edges kept (the strokes' antialiasing), everything else of the page cleared.
    region = cv2.dilate(chosen, np.ones((3, 3), np.uint8)).astype(bool)
    digit = np.where(region, ink, 0.0).astype(np.float32)
    strong = float(np.percentile(ink[chosen.astype(bool)], 90))
    floor = threshold / 2
    digit = np.clip((digit - floor) / max(strong - floor, 1e-3), 0.0, 1.0)
    return Ink(digit, lines)


def _flatten(grey: np.ndarray) -> np.ndarray:
    """1 - grey / paper: (H, W) float32, 0 where the paper is, up to 1 for black ink."""
    height, width = grey.shape
    scale = BACKGROUND_SIDE / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(grey, small_size, interpolation=cv2.INTER_AREA)
    k = max(3, round(BACKGROUND_KERNEL * BACKGROUND_SIDE) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.GaussianBlur(paper, (k, k), 0, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)
    flat = 1.0 - grey / np.maximum(paper, 1e-3)
    out: np.ndarray = np.clip(flat, 0.0, 1.0, out=flat)
    return out


def _robust_spread(ink: np.ndarray) -> float:
    """The paper's noise: a robust standard deviation (MAD) of the flattened image in each
    cell of a 4x4 grid, the lower quartile of the cells (the ink, and a desk or a page edge
    in the outer cells, hardly move it); on a subsample."""
    sample = ink[::2, ::2]
    height, width = sample.shape
    spreads = []
    for rows in np.array_split(np.arange(height), 4):
        for cols in np.array_split(np.arange(width), 4):
            if rows.size and cols.size:
                cell = sample[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                spreads.append(float(np.median(np.abs(cell - np.median(cell)))))
    return 1.4826 * float(np.percentile(spreads, 25))


def _remove_lines(mask: np.ndarray, faint: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, int]:
    """`mask` without the ruling lines (horizontal and vertical) found in `faint`, the
    strokes that crossed them or ran along them restored; and how many lines were removed."""
    level = np.zeros(mask.shape, np.float32)  # each line's own ink level, 0 off the lines
    count = 0
    for horizontal in (True, False):
        if horizontal:
            lines = _line_mask(faint, ink)
        else:
            lines = _line_mask(np.ascontiguousarray(faint.T), np.ascontiguousarray(ink.T))
        if lines is None:
            continue
        line_level, found = lines
        np.maximum(level, line_level if horizontal else line_level.T, out=level)
        count += found
    if not count:
        return mask, 0
    # A pen stroke along a line (a 7's bar) is darker than the printed line: it stays.
    darker = ink > np.maximum(LINE_INK_RATIO * level, level + 0.15)
    removed = ((level > 0) & ~darker).astype(np.uint8)
    kept = mask & ~removed
    # A stroke crossing a line continues on both sides: close the gaps across each line.
    across = np.maximum(
        cv2.morphologyEx(kept, cv2.MORPH_CLOSE, np.ones((9, 1), np.uint8)),
        cv2.morphologyEx(kept, cv2.MORPH_CLOSE, np.ones((1, 9), np.uint8)),
    )
    return kept | (across & removed & mask), count


def _line_mask(mask: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Horizontal lines of `mask` (rows), each fitted and drawn across the whole width with a
    margin, valued with its median ink; None if there are none."""
    height, width = mask.shape
    # A line across the page puts that much ink in some band of 8 rows, even tilted across a
    # few bands; photos without lines mostly have no such band, and skip the opening.
    rows = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
    bands = np.add.reduceat(rows, np.arange(0, height, 8))
    if int(bands.max()) < LINE_SPAN * width / 4:
        return None
    length = max(8, round(width * LINE_SPAN * 2 / 3))
    # Across the line, tolerate a tilt of about 2 degrees; along it, bridge small breaks.
    thick = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    opened = cv2.morphologyEx(thick, cv2.MORPH_OPEN, np.ones((1, length), np.uint8)) & mask
    if not opened.any():
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    lines: list[tuple[float, float, int, int, float]] = []  # slope, intercept, thickness, span, ink
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if w < width * LINE_SPAN or h > max(6, height // 6):
            continue
        ys, xs = np.nonzero(labels[y : y + h, x : x + w] == label)
        slope, intercept = _fit_line(xs + x, ys + y)
        level = float(np.median(ink[ys + y, xs + x]))
        lines.append((slope, intercept, max(1, round(area / w)), int(w), level))
    if len(lines) == 1:
        # One long straight stroke alone may be the digit itself (a 1, a 7's stem in a close
        # crop); a lone ruling line (a margin line, the last line of a page) runs edge to edge
        # or lies away from the middle, where nobody writes the digit they photograph.
        slope, intercept, _, span, _ = lines[0]
        middle = slope * width / 2 + intercept
        if span < 0.95 * width and abs(middle - height / 2) < 0.2 * height:
            return None
    out = np.zeros((height, width), np.float32)
    for slope, intercept, thickness, _, level in lines:
        ends = [(0, intercept), (width - 1, slope * (width - 1) + intercept)]
        p0, p1 = ((round(a), round(float(b))) for a, b in ends)
        cv2.line(out, p0, p1, max(level, 1e-3), thickness + 2)
    return (out, len(lines)) if lines else None


def _fit_line(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """y = slope * x + intercept through a line's pixels, refitted twice without those more
    than 2 pixels off: a pen stroke touching the line must not tilt it."""
    keep = np.ones(xs.size, bool)
    slope, intercept = 0.0, float(np.median(ys))
    for _ in range(3):
        slope, intercept = (float(v) for v in np.polyfit(xs[keep], ys[keep], 1))
        near = np.abs(ys - (slope * xs + intercept)) <= 2.0
        if near.sum() < 2 or (near == keep).all():
            break
        keep = near
    return slope, intercept


def _choose_digit(mask: np.ndarray) -> np.ndarray | None:
    """The digit's pixels (uint8 0/1): the best component and the pieces around it; None
    when nothing but specks is left."""
    height, width = mask.shape
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    w, h = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    big_enough = areas >= SPECK * height * width
    if not big_enough.any():
        return None
    sides = (x == 0).astype(int) + (y == 0) + (x + w == width) + (y + h == height)
    touches = sides > 0
    # From one side of the picture to another, and long: a page's edge, the desk, a shadow's
    # rim; never the digit (a digit cut by the frame touches one side).
    big_enough &= ~((sides >= 2) & ((w > EDGE_SPAN * width) | (h > EDGE_SPAN * height)))
    if not big_enough.any():
        return None
    dx = (centroids[1:, 0] - width / 2) / width
    dy = (centroids[1:, 1] - height / 2) / height
    score = areas * np.exp(-4.0 * (dx**2 + dy**2)) * np.where(touches, 0.15, 1.0) * big_enough
    best = int(np.argmax(score))
    side = max(w[best], h[best])
    if side < MIN_DIGIT_SIDE * max(height, width):
        return None
    reach = PIECE_REACH * side
    left, top = x[best] - reach, y[best] - reach
    right, bottom = x[best] + w[best] + reach, y[best] + h[best] + reach
    near = (
        (x + w >= left)
        & (x <= right)
        & (y + h >= top)
        & (y <= bottom)
        & (areas >= 0.02 * areas[best])
        & ~touches
    )
    near[best] = True
    keep = np.zeros(count, np.uint8)
    keep[1:][near] = 1
    chosen: np.ndarray = keep[labels]
    return chosen
