"""Digits as a person draws them with a mouse: strokes, styles, and one hand's variation.

Each style is a list of strokes; each stroke is a polyline of (x, y) points in a glyph box
where the digit is 1 tall, y grows downwards (as on screen) and x runs from 0 to 1. `drawings`
turns the styles into concrete drawings on the pad, in pad fractions (0..1), each with its own
size (40-80 % of the pad's height), position, slant, tilt, width, jitter and mouse speed, drawn
from a seeded generator so that every run draws the same pictures.

The styles are the ones people use and MNIST under-represents or reads as another digit: a 1
with a flag (and a base), a 7 with a bar through its stem, an open-topped 4, a 2 with a loop at
the bottom, an 8 as two circles, a 9 with a curved tail, a 5 whose top bar comes last.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Point = tuple[float, float]
Stroke = list[Point]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points along an elliptic arc, angles in degrees, clockwise on screen (0 = right, 90 = down).

    An `end` below `start` runs counter-clockwise, as a person draws the bowl of a 6 or a 0.
    """
    count = max(3, math.ceil(abs(end - start) / 20)) + 1
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * i / (count - 1))),
            cy + ry * math.sin(math.radians(start + (end - start) * i / (count - 1))),
        )
        for i in range(count)
    ]


def join(*parts: Stroke) -> Stroke:
    """One stroke through several parts, pen down throughout."""
    return [point for part in parts for point in part]


# digit -> style name -> strokes in the glyph box.
STYLES: dict[int, dict[str, list[Stroke]]] = {
    0: {
        "oval": [arc(0.5, 0.5, 0.28, 0.5, 265, -100)],
        "round": [arc(0.5, 0.5, 0.4, 0.5, 270, -80)],
        "clockwise": [arc(0.5, 0.5, 0.3, 0.5, 250, 620)],
    },
    1: {
        "plain": [[(0.52, 0.0), (0.5, 0.5), (0.48, 1.0)]],
        "flag": [[(0.3, 0.24), (0.55, 0.0), (0.55, 0.5), (0.55, 1.0)]],
        "flag and base": [
            [(0.3, 0.24), (0.55, 0.0), (0.55, 0.5), (0.55, 1.0)],
            [(0.25, 1.0), (0.85, 1.0)],
        ],
    },
    2: {
        "plain": [
            join(arc(0.5, 0.28, 0.32, 0.28, 200, 380), [(0.2, 1.0), (0.85, 1.0)]),
        ],
        "loop": [
            join(
                arc(0.5, 0.28, 0.32, 0.28, 200, 380),
                [(0.3, 0.85)],
                arc(0.24, 0.9, 0.1, 0.1, 315, 45),
                [(0.85, 0.98)],
            ),
        ],
        "curved neck": [
            join(
                arc(0.5, 0.27, 0.3, 0.27, 190, 360),
                arc(0.3, 0.27, 0.5, 0.73, 0, 90)[1:],
                [(0.85, 1.0)],
            ),
        ],
    },
    3: {
        "round": [
            join(arc(0.48, 0.25, 0.3, 0.25, 210, 450), arc(0.48, 0.74, 0.34, 0.26, 270, 510))
        ],
        "flat top": [
            join(
                [(0.18, 0.0), (0.8, 0.0), (0.45, 0.42)],
                arc(0.48, 0.7, 0.34, 0.3, 280, 510),
            ),
        ],
    },
    4: {
        "open top": [
            [(0.22, 0.0), (0.18, 0.62), (0.88, 0.62)],
            [(0.68, 0.05), (0.68, 1.0)],
        ],
        "closed top": [
            [(0.62, 0.0), (0.12, 0.66), (0.9, 0.66)],
            [(0.64, 0.0), (0.64, 1.0)],
        ],
    },
    5: {
        "hook then bar": [
            join([(0.3, 0.0), (0.26, 0.45)], arc(0.5, 0.7, 0.32, 0.3, 230, 500)),
            [(0.3, 0.0), (0.82, 0.0)],
        ],
        "one stroke": [
            join([(0.82, 0.0), (0.3, 0.0), (0.26, 0.45)], arc(0.5, 0.7, 0.32, 0.3, 230, 500)),
        ],
    },
    6: {
        "plain": [join(arc(0.75, 0.6, 0.5, 0.6, 250, 180), arc(0.5, 0.7, 0.25, 0.3, 180, -170))],
        "straight stem": [
            join([(0.7, 0.0), (0.28, 0.6)], arc(0.5, 0.72, 0.24, 0.28, 200, -170)),
        ],
    },
    7: {
        "plain": [[(0.15, 0.0), (0.85, 0.0), (0.42, 1.0)]],
        "bar": [
            [(0.15, 0.0), (0.85, 0.0), (0.42, 1.0)],
            [(0.42, 0.52), (0.85, 0.5)],
        ],
        "serif": [[(0.15, 0.16), (0.15, 0.0), (0.85, 0.0), (0.45, 1.0)]],
    },
    8: {
        "one stroke": [
            join(
                arc(0.5, 0.24, 0.26, 0.24, 340, 90),
                arc(0.5, 0.74, 0.3, 0.26, 270, 630),
                arc(0.5, 0.24, 0.26, 0.24, 90, -20),
            ),
        ],
        "two circles": [
            arc(0.5, 0.24, 0.25, 0.24, 270, 640),
            arc(0.5, 0.74, 0.3, 0.26, 270, 640),
        ],
    },
    9: {
        "straight tail": [join(arc(0.45, 0.28, 0.28, 0.28, 0, -360), [(0.73, 1.0)])],
        "curved tail": [
            join(
                arc(0.45, 0.28, 0.28, 0.28, 0, -360),
                [(0.72, 0.7)],
                arc(0.45, 0.7, 0.27, 0.3, 0, 120)[1:],
            ),
        ],
    },
}

# Shapes that are not digits (a person trying the page, or a slip of the mouse).
NOT_DIGITS: dict[str, list[Stroke]] = {
    "star": [
        [
            (
                0.5 + 0.5 * math.cos(math.radians(-90 + 144 * k)),
                0.5 + 0.5 * math.sin(math.radians(-90 + 144 * k)),
            )
            for k in range(6)
        ]
    ],
    "letter A": [[(0.1, 1.0), (0.5, 0.0), (0.9, 1.0)], [(0.27, 0.6), (0.73, 0.6)]],
    # Loops across the pad, like testing a pen.
    "scribble": [
        [
            (0.1 + 0.8 * k / 60 + 0.1 * math.cos(k * 0.5), 0.5 + 0.3 * math.sin(k * 0.5))
            for k in range(61)
        ]
    ],
}


@dataclass(frozen=True)
class Drawing:
    """One concrete drawing: pad-fraction strokes plus how fast the mouse moves."""

    digit: int
    style: str
    variant: int
    strokes: list[Stroke]  # in pad fractions, 0..1
    step: float  # mouse travel per pointer event, in pad fractions

    @property
    def name(self) -> str:
        return f"{self.digit} {self.style} #{self.variant}"


def place(strokes: list[Stroke], rng: random.Random) -> list[Stroke]:
    """Put glyph-box strokes on the pad as one person's hand would on one try."""
    height = rng.uniform(0.4, 0.8)  # of the pad's side
    widen = rng.uniform(0.85, 1.2)
    slant = math.tan(math.radians(rng.uniform(-12.0, 18.0)))  # > 0 leans right
    tilt = math.radians(rng.uniform(-6.0, 6.0))
    jitter = rng.uniform(0.0015, 0.005)  # of the pad's side, per point

    # Shape in pad units around the glyph's centre: widen, slant, tilt.
    shaped: list[Stroke] = []
    for stroke in strokes:
        points: Stroke = []
        for x, y in stroke:
            px = (x - 0.5) * height * widen + (0.5 - y) * height * slant
            py = (y - 0.5) * height
            points.append(
                (
                    px * math.cos(tilt) - py * math.sin(tilt),
                    px * math.sin(tilt) + py * math.cos(tilt),
                )
            )
        shaped.append(points)

    # Centre anywhere that keeps the whole digit, and the pen's width, on the pad.
    margin = 0.07
    xs = [x for stroke in shaped for x, _ in stroke]
    ys = [y for stroke in shaped for _, y in stroke]
    low_x, high_x = margin - min(xs), 1 - margin - max(xs)
    low_y, high_y = margin - min(ys), 1 - margin - max(ys)
    centre_x = rng.uniform(max(low_x, 0.38), min(high_x, 0.62)) if low_x < high_x else 0.5
    centre_y = rng.uniform(max(low_y, 0.38), min(high_y, 0.62)) if low_y < high_y else 0.5
    return [
        [
            (
                min(max(centre_x + x + rng.gauss(0, jitter), 0.0), 1.0),
                min(max(centre_y + y + rng.gauss(0, jitter), 0.0), 1.0),
            )
            for x, y in stroke
        ]
        for stroke in shaped
    ]


def drawings(per_digit: int, seed: int = 12) -> list[Drawing]:
    """`per_digit` drawings of each digit 0-9, its styles taken in turn, all from one seed."""
    rng = random.Random(seed)
    made: list[Drawing] = []
    for digit, styles in STYLES.items():
        names = list(styles)
        for variant in range(per_digit):
            style = names[variant % len(names)]
            made.append(
                Drawing(
                    digit=digit,
                    style=style,
                    variant=variant // len(names),
                    strokes=place(styles[style], rng),
                    step=rng.uniform(0.035, 0.07),
                )
            )
    return made
