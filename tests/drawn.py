"""A wider drawing test than the browser's: the try-it page's canvas rendered offline.

    python -m tests.drawn --model models/digitsum.pt [--misses PATH]

tests/e2e/test_drawing.py draws 100 digits with Chromium's mouse; this draws 1,000 and more
kinds, without a browser, the way the page paints them (app/static/app.js: a 280 px black pad,
a white round brush, straight segments between pointer events, round caps and joins), saves the
pad as the PNG the page sends, and reads it through the service's own path
(`app.imaging.prepare_image`, then `app.inference.load_model(...).predict`, the model frozen and
optimised for inference as the service loads it). A drawing is read when the digit and the sum
(digit + a seeded number 0..9) are both right; a refusal (no digit) is a miss.

What it covers, beyond tests/e2e/strokes.py's styles (every one of which is here too):
- 1s with flags of several lengths (0.15-0.45 of the height) and angles (30-60 degrees below
  the horizontal), with a curved lead-in stroke, each with and without a base;
- 7s plain, barred, with a curved stem, curved and barred, and with a serif; 4s open and closed;
- a hand: pace changes within a stroke (a fast hand cuts corners and flattens curves between two
  pointer events), jitter per event, slant and tilt;
- brushes thin (1/20 of the pad), the page's own (1/11) and thick (1/7);
- drawn small (30-40 % of the pad's height), medium (50-70 %) and large (80-92 %), centred
  or pushed off-centre towards an edge or a corner.

The shapes are written here, not taken from training/glyphs.py, whose pen skeletons and mouse
drawings are training data: a figure on this set measures the model on drawings it was not fed.
Everything is drawn from one seed, so every run draws the same pictures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import NoDigit
from app.imaging import prepare_image
from app.inference import load_model
from tests.e2e.strokes import STYLES, Stroke, arc, join

PAD_SIDE = 280  # app/static/index.html
BRUSHES = {"thin": 1 / 20, "page": 1 / 11, "thick": 1 / 7}  # of the pad's side; app.js: 1/11
SIZES = {"small": (0.3, 0.4), "medium": (0.5, 0.7), "large": (0.8, 0.92)}  # of the pad's height
# Nobody draws a digit whose strokes are a third of its height: such pairs are not drawn.
MAX_BRUSH_TO_HEIGHT = 0.3
PER_DIGIT = 100
SEED = 26


def _flag_one(length: float, angle_deg: float, base: bool) -> list[Stroke]:
    a = math.radians(angle_deg)
    stem: Stroke = [(0.55 - length * math.cos(a), length * math.sin(a)), (0.55, 0.0), (0.55, 1.0)]
    return [stem, [(0.25, 1.0), (0.85, 1.0)]] if base else [stem]


def _lead_in_one(base: bool) -> list[Stroke]:
    # An up-stroke from low on the left, curving into the top of the stem, then down.
    lead = [(0.15 + 0.4 * t * t, 0.5 - 0.5 * (2 * t - t * t)) for t in (i / 6 for i in range(7))]
    stem: Stroke = [*lead, (0.55, 0.5), (0.55, 1.0)]
    return [stem, [(0.25, 1.0), (0.85, 1.0)]] if base else [stem]


def _curved_seven(bar: bool) -> list[Stroke]:
    stem = [
        (0.85 * (1 - t) ** 2 + 2 * 0.5 * t * (1 - t) + 0.4 * t * t, 2 * 0.45 * t * (1 - t) + t * t)
        for t in (i / 8 for i in range(9))
    ]
    top: Stroke = [(0.15, 0.0), *stem]
    return [top, [(0.3, 0.52), (0.8, 0.5)]] if bar else [top]


def wide_styles() -> dict[int, dict[str, list[Stroke]]]:
    """digit -> style name -> strokes in the glyph box (1 tall, y down): strokes.py's styles
    and the wider ones above."""
    styles = {digit: dict(named) for digit, named in STYLES.items()}
    for length in (0.15, 0.3, 0.45):
        for angle in (30, 45, 60):
            styles[1][f"flag {length:g} at {angle}"] = _flag_one(length, angle, base=False)
            styles[1][f"flag {length:g} at {angle} and base"] = _flag_one(length, angle, True)
    styles[1]["lead-in"] = _lead_in_one(base=False)
    styles[1]["lead-in and base"] = _lead_in_one(base=True)
    styles[7]["curved stem"] = _curved_seven(bar=False)
    styles[7]["curved stem and bar"] = _curved_seven(bar=True)
    styles[4]["closed, one stroke"] = [[(0.64, 1.0), (0.64, 0.0), (0.1, 0.66), (0.9, 0.66)]]
    styles[2]["z-like"] = [join(arc(0.5, 0.25, 0.3, 0.25, 200, 360), [(0.15, 1.0), (0.85, 1.0)])]
    return styles


@dataclass(frozen=True)
class PadDrawing:
    """One drawing: pointer events per stroke in pad pixels, and the brush that paints them."""

    digit: int
    style: str
    brush: str
    size: str
    position: str
    events: list[list[tuple[float, float]]]

    @property
    def name(self) -> str:
        return f"{self.digit} {self.style} ({self.brush} brush, {self.size}, {self.position})"


def _densify(stroke: Stroke, step: float) -> list[tuple[float, float]]:
    out = [stroke[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
        n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1)]
    return out


def _mouse(
    path: list[tuple[float, float]], rng: random.Random, step: float, jitter: float
) -> list[tuple[float, float]]:
    """Pointer events along a pen-down path (pad px): a new pace every so often, jitter."""
    lengths = [math.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in itertools.pairwise(path)]
    events = [path[0]]
    travelled, pace, next_change = 0.0, rng.uniform(0.5, 1.5), rng.uniform(10, 60)
    for (x, y), length in zip(path[1:], lengths, strict=True):
        travelled += length
        if travelled >= next_change:
            pace, next_change = rng.uniform(0.4, 2.5), next_change + rng.uniform(10, 60)
        if travelled >= step * pace:
            events.append((x, y))
            travelled = 0.0
    events.append(path[-1])
    return [(x + rng.gauss(0, jitter), y + rng.gauss(0, jitter)) for x, y in events]


def _place(
    strokes: list[Stroke], rng: random.Random, height: float, off_centre: bool, margin: float
) -> list[list[tuple[float, float]]]:
    """Glyph-box strokes onto the pad (px): slant, tilt, width; centred or pushed to an edge."""
    side = PAD_SIDE
    h = height * side
    widen = rng.uniform(0.8, 1.2)
    slant = math.tan(math.radians(rng.uniform(-12.0, 18.0)))
    tilt = math.radians(rng.uniform(-8.0, 8.0))
    shaped = []
    for stroke in strokes:
        pts = []
        for x, y in stroke:
            px, py = (x - 0.5) * h * widen + (0.5 - y) * h * slant, (y - 0.5) * h
            pts.append(
                (
                    px * math.cos(tilt) - py * math.sin(tilt),
                    px * math.sin(tilt) + py * math.cos(tilt),
                )
            )
        shaped.append(pts)
    xs = [x for s in shaped for x, _ in s]
    ys = [y for s in shaped for _, y in s]
    low_x, high_x = margin - min(xs), side - margin - max(xs)
    low_y, high_y = margin - min(ys), side - margin - max(ys)
    if off_centre:  # as far towards a random edge or corner as fits
        cx = rng.choice((low_x, high_x, (low_x + high_x) / 2)) if low_x < high_x else side / 2
        cy = rng.choice((low_y, high_y)) if low_y < high_y else side / 2
    else:
        cx = side / 2 + rng.uniform(-0.03, 0.03) * side
        cy = side / 2 + rng.uniform(-0.03, 0.03) * side
    return [[(cx + x, cy + y) for x, y in s] for s in shaped]


def drawings(per_digit: int = PER_DIGIT, seed: int = SEED) -> list[PadDrawing]:
    """`per_digit` drawings of each digit, its styles in turn, the hand's variation seeded."""
    rng = random.Random(seed)
    made = []
    combos = [
        (brush, size)
        for brush in BRUSHES
        for size in SIZES
        if BRUSHES[brush] <= MAX_BRUSH_TO_HEIGHT * SIZES[size][0]
    ]
    for digit, styles in wide_styles().items():
        names = list(styles)
        for i in range(per_digit):
            style = names[i % len(names)]
            brush, size = combos[rng.randrange(len(combos))]
            height = rng.uniform(*SIZES[size])
            off_centre = rng.random() < 0.5
            width = BRUSHES[brush] * PAD_SIDE
            placed = _place(styles[style], rng, height, off_centre, margin=width / 2 + 2)
            step = rng.uniform(0.01, 0.07) * PAD_SIDE  # travel per pointer event at pace 1
            jitter = rng.uniform(0.0005, 0.005) * PAD_SIDE
            events = [_mouse(_densify(s, 1.0), rng, step, jitter) for s in placed]
            made.append(
                PadDrawing(
                    digit, style, brush, size, "off-centre" if off_centre else "centred", events
                )
            )
    return made


def pad_png(drawing: PadDrawing) -> bytes:
    """The pad as the page sends it: white strokes on black, painted as the canvas does
    (lines between events, a round dot at each, so caps and joins are round), 2x supersampled."""
    s = 2
    image = Image.new("L", (PAD_SIDE * s, PAD_SIDE * s), 0)
    draw = ImageDraw.Draw(image)
    width = BRUSHES[drawing.brush] * PAD_SIDE * s
    r = width / 2
    for stroke in drawing.events:
        points = [(x * s, y * s) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(width)))
        for x, y in points:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    buffer = io.BytesIO()
    image.reduce(s).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Read:
    drawing: PadDrawing
    number: int
    digit: int | None  # None: refused
    sum: int | None

    @property
    def correct(self) -> bool:
        return self.digit == self.drawing.digit and self.sum == self.drawing.digit + self.number


def read_drawings(model_path: Path, per_digit: int = PER_DIGIT) -> list[Read]:
    """Every drawing through prepare_image and the model as the service loads it."""
    model = load_model(model_path, torch.device("cpu"))
    numbers = random.Random(7)
    made = drawings(per_digit)
    pixels: dict[int, np.ndarray] = {}  # a drawing the pipeline refuses has none
    for i, drawing in enumerate(made):
        with contextlib.suppress(NoDigit):
            pixels[i] = prepare_image(pad_png(drawing), DEFAULT_MAX_IMAGE_PIXELS).pixels
    chosen = [numbers.randrange(10) for _ in made]
    kept = sorted(pixels)
    answers: dict[int, tuple[int | None, int | None]] = {}
    for start in range(0, len(kept), 64):
        batch = kept[start : start + 64]
        images = torch.from_numpy(np.stack([pixels[i] for i in batch])).unsqueeze(1)
        numbers_t = torch.tensor([chosen[i] for i in batch], dtype=torch.long)
        for i, p in zip(batch, model.predict(images, numbers_t), strict=True):
            answers[i] = (None, None) if p.no_digit else (p.digit, p.sum)
    return [
        Read(drawing, chosen[i], *answers.get(i, (None, None))) for i, drawing in enumerate(made)
    ]


def report(reads: list[Read]) -> str:
    """Accuracy overall and per group, and the confusion pairs left."""
    lines = []
    right = sum(r.correct for r in reads)
    lines.append(f"all: {right}/{len(reads)} = {right / len(reads):.2%} read (digit and sum)")
    for attribute in ("digit", "brush", "size", "position"):
        groups: dict[object, list[Read]] = defaultdict(list)
        for r in reads:
            groups[getattr(r.drawing, attribute)].append(r)
        cells = [
            f"{key}: {sum(r.correct for r in group) / len(group):.1%} of {len(group)}"
            for key, group in sorted(groups.items(), key=lambda kv: str(kv[0]))
        ]
        lines.append(f"by {attribute}: " + ", ".join(cells))
    pairs = Counter(
        (r.drawing.digit, "refused" if r.digit is None else r.digit)
        for r in reads
        if r.digit != r.drawing.digit
    )
    lines.append(
        "confusions (true -> read: count): "
        + (", ".join(f"{t} -> {p}: {n}" for (t, p), n in pairs.most_common()) or "none")
    )
    inconsistent = sum(1 for r in reads if r.digit == r.drawing.digit and not r.correct)
    lines.append(f"digit right but sum wrong: {inconsistent}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.drawn", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/digitsum.pt"), help="checkpoint")
    p.add_argument("--per-digit", type=int, default=PER_DIGIT, help="drawings of each digit")
    p.add_argument("--misses", type=Path, default=None, help="write every miss here")
    args = p.parse_args(argv)
    reads = read_drawings(args.model, args.per_digit)
    print(report(reads))
    if args.misses is not None:
        args.misses.write_text(
            "".join(
                f"{r.drawing.name} + {r.number}: read {r.digit}, sum {r.sum}\n"
                for r in reads
                if not r.correct
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
