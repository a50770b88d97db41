"""Digit glyphs that are not MNIST: synthetic pen strokes and fonts, split by source.

Two families of sources draw the ten digits:

- "pen": our own pen strokes. Each digit has several allographs (a 1 with and without a flag,
  a 7 with and without a bar, a 4 open or closed at the top, ...) stored as skeletons in a unit
  box; a *writer* is a family of parameters (slant, proportions, tremor, stroke width, which
  allographs it prefers) that turns a skeleton into a drawing.
- "font": glyphs that FreeType renders from font files, then reshaped per call.

Sources are split into "train" (pen writers of their own, and fonts that pip packages ship:
matplotlib's bundled fonts, font-amatic-sc, font-intuitive) and "heldout" (other pen writers,
and Debian's handwriting fonts), so that a held-out figure measures generalisation to writers
and typefaces the model never saw. The Hershey vector fonts are deliberately absent: the
project's independent check draws from them.

Every render is random per call (size, position, stroke width, slant, rotation, elastic
distortion, tremor, broken strokes) and deterministic given the generator.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SPLITS = ("train", "heldout")
NEGATIVE_KINDS = ("letter", "symbol", "scribble")

# Letters and symbols that no reader should take for a digit (no O, I, l, S, Z, B, g, q, ...).
NEGATIVE_LETTERS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy"
NEGATIVE_SYMBOLS = "+=%&#@?*<>~"

# Supersampling factor for pen strokes: PIL draws lines without antialiasing.
_SUPERSAMPLE = 4


class GlyphSourceMissing(RuntimeError):
    """A glyph source's font file is not installed; the message names the package to install."""


@dataclass(frozen=True)
class GlyphSource:
    """One source of digit glyphs: a pen writer or a font file, in one split."""

    name: str  # e.g. "pen:upright-neat", "font:DejaVuSans-Bold", "font:Humor-Sans"
    family: str  # "pen" or "font"
    split: str  # "train" or "heldout"


# ---------------------------------------------------------------------------------------------
# Pen skeletons: strokes in a unit box, x to the right, y downwards, both in [0, 1].

Stroke = np.ndarray  # (N, 2) float64 points
Skeleton = tuple[Stroke, ...]


def _densify(points: Sequence[tuple[float, float]] | np.ndarray, step: float = 0.05) -> Stroke:
    """Resample a polyline at about `step` spacing, so that distortions bend straight lines too."""
    p = np.asarray(points, dtype=np.float64)
    seg = np.hypot(*np.diff(p, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, math.ceil(arc[-1] / step) + 1)
    t = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(t, arc, p[:, 0]), np.interp(t, arc, p[:, 1])], axis=1)


def _arc(
    cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float
) -> np.ndarray:
    """Points on an elliptical arc; angles in degrees, 0 = right, 90 = down (y grows down)."""
    n = max(4, int(abs(end_deg - start_deg) / 12) + 1)
    a = np.radians(np.linspace(start_deg, end_deg, n))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _bezier(*ctrl: tuple[float, float], n: int = 16) -> np.ndarray:
    """`n` points on the Bezier curve of these control points (Bernstein form, any degree)."""
    c = np.asarray(ctrl, dtype=np.float64)  # (k + 1, 2)
    k = len(c) - 1
    t = np.linspace(0.0, 1.0, n)
    basis = np.stack([math.comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)], 1)
    out: np.ndarray = basis @ c  # (n, 2)
    return out


def _path(*parts: np.ndarray | Sequence[tuple[float, float]]) -> Stroke:
    """One pen stroke made of consecutive parts (lines, arcs, curves), densified."""
    return _densify(np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]))


def _digit_allographs() -> dict[int, dict[str, Skeleton]]:
    """The skeletons of every digit, by allograph name."""
    fig8 = np.linspace(0.0, 2.0 * math.pi, 48)
    return {
        0: {
            "oval": (_path(_arc(0.5, 0.5, 0.48, 0.5, -100, 275)),),
            "oval-overlap": (_path(_arc(0.5, 0.5, 0.46, 0.5, -60, 330)),),
            "narrow-loop": (_path(_arc(0.5, 0.52, 0.38, 0.48, -80, 290)),),
        },
        1: {
            "plain": (_path([(0.55, 0.0), (0.45, 1.0)]),),
            "flag": (_path([(0.15, 0.3), (0.55, 0.0), (0.5, 1.0)]),),
            "flag-base": (
                _path([(0.2, 0.25), (0.55, 0.0), (0.55, 1.0)]),
                _path([(0.2, 1.0), (0.9, 1.0)]),
            ),
        },
        2: {
            "plain": (
                _path(
                    _bezier((0.08, 0.25), (0.2, -0.08), (0.95, -0.08), (0.85, 0.35)),
                    _bezier((0.85, 0.35), (0.7, 0.6), (0.3, 0.8), (0.05, 1.0)),
                    [(0.05, 1.0), (1.0, 0.98)],
                ),
            ),
            "loop": (
                _path(
                    _bezier((0.1, 0.22), (0.3, -0.1), (1.0, 0.0), (0.8, 0.4)),
                    _bezier((0.8, 0.4), (0.6, 0.7), (0.1, 0.8), (0.15, 0.95)),
                    _bezier((0.15, 0.95), (0.2, 1.05), (0.35, 0.8), (0.3, 0.85)),
                    _bezier((0.3, 0.85), (0.5, 1.0), (0.8, 1.0), (1.0, 0.9)),
                ),
            ),
        },
        3: {
            "round": (
                _path(
                    _arc(0.45, 0.26, 0.42, 0.26, -160, 90),
                    _arc(0.45, 0.74, 0.5, 0.26, -90, 155),
                ),
            ),
            "flat-top": (
                _path(
                    [(0.1, 0.0), (0.9, 0.0), (0.4, 0.42)],
                    _arc(0.45, 0.7, 0.48, 0.29, -75, 160),
                ),
            ),
        },
        4: {
            "closed": (_path([(0.72, 1.0), (0.72, 0.0), (0.0, 0.68), (1.0, 0.68)]),),
            "open": (
                _path([(0.25, 0.0), (0.1, 0.62), (1.0, 0.62)]),
                _path([(0.75, 0.2), (0.72, 1.0)]),
            ),
        },
        5: {
            "one-stroke": (
                _path(
                    [(0.9, 0.0), (0.22, 0.0), (0.15, 0.45)],
                    _bezier((0.15, 0.45), (0.6, 0.25), (1.05, 0.55), (0.85, 0.82)),
                    _bezier((0.85, 0.82), (0.65, 1.08), (0.2, 1.0), (0.05, 0.85)),
                ),
            ),
            "flag-apart": (
                _path(
                    [(0.22, 0.0), (0.15, 0.45)],
                    _bezier((0.15, 0.45), (0.6, 0.25), (1.05, 0.55), (0.85, 0.82)),
                    _bezier((0.85, 0.82), (0.65, 1.08), (0.2, 1.0), (0.05, 0.85)),
                ),
                _path([(0.22, 0.0), (0.92, 0.02)]),
            ),
        },
        6: {
            "round": (
                _path(
                    _bezier((0.8, 0.0), (0.3, 0.1), (0.0, 0.5), (0.12, 0.78)),
                    _arc(0.5, 0.72, 0.38, 0.28, 180, 520),
                ),
            ),
            "straight-back": (
                _path(
                    [(0.7, 0.0), (0.15, 0.7)],
                    _arc(0.5, 0.74, 0.36, 0.26, 170, 520),
                ),
            ),
        },
        7: {
            "plain": (_path([(0.0, 0.02), (1.0, 0.0), (0.35, 1.0)]),),
            "bar": (
                _path([(0.0, 0.02), (1.0, 0.0), (0.35, 1.0)]),
                _path([(0.35, 0.52), (0.9, 0.5)]),
            ),
            "curved": (
                _path(
                    [(0.0, 0.05), (0.95, 0.0)],
                    _bezier((0.95, 0.0), (0.6, 0.4), (0.45, 0.7), (0.45, 1.0)),
                ),
            ),
        },
        8: {
            "figure": (
                _path(np.stack([0.5 + 0.45 * np.sin(2 * fig8), 0.5 - 0.5 * np.cos(fig8)], axis=1)),
            ),
            "two-loops": (
                _path(_arc(0.5, 0.25, 0.36, 0.25, 90, 450)),
                _path(_arc(0.5, 0.74, 0.48, 0.26, -90, 270)),
            ),
        },
        9: {
            "straight-tail": (
                _path(_arc(0.45, 0.3, 0.42, 0.3, 0, -360), [(0.87, 0.3), (0.8, 1.0)]),
            ),
            "curved-tail": (
                _path(
                    _arc(0.45, 0.3, 0.42, 0.3, 0, -360),
                    _bezier((0.87, 0.3), (0.9, 0.7), (0.7, 1.0), (0.25, 0.98)),
                ),
            ),
        },
    }


def _letter_skeletons() -> dict[str, Skeleton]:
    """Pen letters and symbols for negatives, only ones that cannot pass for a digit."""
    return {
        "A": (_path([(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)]), _path([(0.22, 0.6), (0.78, 0.6)])),
        "E": (
            _path([(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)]),
            _path([(0.1, 0.5), (0.7, 0.5)]),
        ),
        "F": (_path([(0.9, 0.0), (0.1, 0.0), (0.1, 1.0)]), _path([(0.1, 0.48), (0.7, 0.48)])),
        "H": (
            _path([(0.05, 0.0), (0.05, 1.0)]),
            _path([(0.95, 0.0), (0.95, 1.0)]),
            _path([(0.05, 0.5), (0.95, 0.5)]),
        ),
        "K": (_path([(0.1, 0.0), (0.1, 1.0)]), _path([(0.9, 0.0), (0.12, 0.55), (0.95, 1.0)])),
        "M": (_path([(0.0, 1.0), (0.05, 0.0), (0.5, 0.65), (0.95, 0.0), (1.0, 1.0)]),),
        "N": (_path([(0.05, 1.0), (0.05, 0.0), (0.95, 1.0), (0.95, 0.0)]),),
        "V": (_path([(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)]),),
        "W": (_path([(0.0, 0.0), (0.25, 1.0), (0.5, 0.35), (0.75, 1.0), (1.0, 0.0)]),),
        "X": (_path([(0.0, 0.0), (1.0, 1.0)]), _path([(1.0, 0.0), (0.0, 1.0)])),
        "Y": (_path([(0.0, 0.0), (0.5, 0.5), (1.0, 0.0)]), _path([(0.5, 0.5), (0.5, 1.0)])),
        "R": (
            _path([(0.1, 1.0), (0.1, 0.0)], _arc(0.45, 0.25, 0.42, 0.25, -90, 90), [(0.1, 0.5)]),
            _path([(0.4, 0.5), (0.95, 1.0)]),
        ),
        "+": (_path([(0.5, 0.05), (0.5, 0.95)]), _path([(0.05, 0.5), (0.95, 0.5)])),
        "=": (_path([(0.0, 0.3), (1.0, 0.3)]), _path([(0.0, 0.7), (1.0, 0.7)])),
        "#": (
            _path([(0.35, 0.0), (0.25, 1.0)]),
            _path([(0.75, 0.0), (0.65, 1.0)]),
            _path([(0.0, 0.33), (1.0, 0.33)]),
            _path([(0.0, 0.67), (1.0, 0.67)]),
        ),
        "*": (
            _path([(0.5, 0.0), (0.5, 1.0)]),
            _path([(0.07, 0.25), (0.93, 0.75)]),
            _path([(0.93, 0.25), (0.07, 0.75)]),
        ),
        "<": (_path([(0.95, 0.0), (0.05, 0.5), (0.95, 1.0)]),),
        ">": (_path([(0.05, 0.0), (0.95, 0.5), (0.05, 1.0)]),),
        "?": (
            _path(_arc(0.5, 0.25, 0.42, 0.25, -170, 60), [(0.5, 0.7)]),
            _path([(0.5, 0.9), (0.5, 0.97)]),
        ),
    }


_PEN_LETTERS = "AEFHKMNVWXYR"
_PEN_SYMBOLS = "+=#*<>?"


@functools.cache
def _skeletons() -> tuple[dict[int, dict[str, _Strokes]], dict[str, _Strokes]]:
    digits = {
        d: {name: _Strokes.of(sk) for name, sk in options.items()}
        for d, options in _digit_allographs().items()
    }
    letters = {char: _Strokes.of(sk) for char, sk in _letter_skeletons().items()}
    return digits, letters


@dataclass(frozen=True)
class _Writer:
    """A family of handwriting parameters: each value is a (low, high) uniform range."""

    slant: tuple[float, float]  # x shift per unit of height, positive leans right
    aspect: tuple[float, float]  # width / height of the digit's box
    width: tuple[float, float]  # stroke width as a fraction of the glyph height
    tremor: tuple[float, float]  # per-point jitter, fraction of the glyph height
    elastic: tuple[float, float]  # amplitude of the smooth distortion
    rotation: tuple[float, float]  # degrees
    # Preferred allographs: weight 3 for these, 1 for the rest.
    prefers: tuple[str, ...] = ()


_WRITERS: dict[str, tuple[str, _Writer]] = {
    # train
    "upright-neat": (
        "train",
        _Writer((-0.08, 0.08), (0.55, 0.75), (0.05, 0.1), (0.0, 0.006), (0.0, 0.03), (-4, 4)),
    ),
    "slanted-fast": (
        "train",
        _Writer(
            (0.15, 0.4),
            (0.5, 0.7),
            (0.04, 0.09),
            (0.003, 0.01),
            (0.02, 0.06),
            (-6, 6),
            prefers=("1:plain", "7:curved", "9:curved-tail", "4:open"),
        ),
    ),
    "narrow-tall": (
        "train",
        _Writer((-0.05, 0.2), (0.35, 0.5), (0.05, 0.12), (0.0, 0.008), (0.01, 0.04), (-5, 5)),
    ),
    "marker-bold": (
        "train",
        _Writer((-0.1, 0.15), (0.55, 0.8), (0.12, 0.2), (0.0, 0.008), (0.01, 0.05), (-6, 6)),
    ),
    # heldout
    "round-wide": (
        "heldout",
        _Writer((-0.1, 0.1), (0.75, 0.95), (0.05, 0.11), (0.0, 0.008), (0.02, 0.05), (-6, 6)),
    ),
    "shaky": (
        "heldout",
        _Writer((-0.1, 0.2), (0.5, 0.75), (0.04, 0.1), (0.01, 0.02), (0.03, 0.07), (-8, 8)),
    ),
    "continental": (
        "heldout",
        _Writer(
            (0.0, 0.25),
            (0.5, 0.7),
            (0.05, 0.1),
            (0.0, 0.008),
            (0.01, 0.05),
            (-5, 5),
            prefers=("1:flag", "1:flag-base", "7:bar", "4:open", "9:straight-tail", "2:loop"),
        ),
    ),
}


@dataclass(frozen=True, eq=False)
class _Strokes:
    """A skeleton's strokes as one array of points (for vectorised distortion) and the index
    where each stroke starts."""

    points: np.ndarray  # (N, 2)
    starts: np.ndarray  # (S,) int
    ends: np.ndarray  # (S,) int, the last point of each stroke

    @classmethod
    def of(cls, skeleton: Skeleton) -> _Strokes:
        lengths = np.array([len(stroke) for stroke in skeleton])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return cls(np.concatenate(skeleton), starts, starts + lengths - 1)


@functools.cache
def _writer_bounds(writer: _Writer) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = zip(
        writer.slant, writer.aspect, writer.width, writer.tremor, writer.elastic, writer.rotation,
        strict=True,
    )  # fmt: skip
    return np.array(lo), np.array(hi) - np.array(lo)


def _pen_strokes(
    strokes: _Strokes, writer: _Writer, rng: np.random.Generator, size: int, height_frac: float
) -> tuple[list[np.ndarray], float]:
    """Turn a unit skeleton into canvas strokes (pixel coordinates) and a stroke width in px."""
    n = len(strokes.starts)
    # One draw for all the scalars: each generator call costs microseconds.
    r = rng.random(16 + 2 * n)
    lo, span = _writer_bounds(writer)
    slant, aspect, width, tremor, amp, rotation = (lo + r[:6] * span).tolist()
    freq = (0.5 + 1.1 * r[6:14]).reshape(2, 2, 2) * (2 * math.pi)
    phase = r[14:16].reshape(2, 1, 1) * (2 * math.pi)
    extend = (-0.6 + 1.4 * r[16:]).reshape(2, n, 1)
    p = strokes.points.copy()  # (N, 2)
    first, last = strokes.starts, strokes.ends
    # Ends extended or shortened: move the first and last points along their segment.
    p[first] += (p[first] - p[first + 1]) * extend[0]
    p[last] += (p[last] - p[last - 1]) * extend[1]
    # A smooth random displacement: two low-frequency waves per axis.
    waves = np.sin(np.einsum("akc,nc->akn", freq, p) + phase)  # (axis, wave, N)
    p += (amp / 2) * waves.sum(axis=1).T
    if tremor > 0:
        jitter = rng.normal(0.0, tremor, size=p.shape)
        jitter[1:-1] = (jitter[:-2] + jitter[1:-1] + jitter[2:]) / 1.5
        p += jitter
    height = height_frac * size
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    # Centre, slant (x shifts with height), squeeze, rotate, scale: one 2x2 matrix.
    shape = np.array([[aspect, -slant * aspect], [0.0, 1.0]])
    rotate = np.array([[cos, -sin], [sin, cos]])
    lo_p, hi_p = p.min(0), p.max(0)
    p = (p - (lo_p + hi_p) / 2) @ (height * rotate @ shape).T
    lo_p, hi_p = p.min(0), p.max(0)
    width_px = max(1.0, width * height)
    margin = width_px / 2 + 1
    # Anywhere reasonable: the glyph stays inside the canvas, its position random.
    low = margin - lo_p
    high = np.maximum(low, size - margin - hi_p)
    p += low + rng.random(2) * (high - low)
    return np.split(p, strokes.starts[1:]), width_px


def _draw_strokes(
    strokes: list[np.ndarray], width_px: float, rng: np.random.Generator, size: int, broken: float
) -> np.ndarray:
    """Draw strokes antialiased (supersampled), with an occasional gap, as float32 coverage."""
    s = _SUPERSAMPLE
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    w = max(1, round(width_px * s))
    r = w / 2
    for stroke in strokes:
        pts = stroke * s
        pieces = [pts]
        if len(pts) > 8 and rng.random() < broken:
            cut = int(rng.integers(2, len(pts) - 4))
            gap = int(rng.integers(1, 3))
            pieces = [pts[:cut], pts[cut + gap :]]
        for piece in pieces:
            if len(piece) >= 2:
                draw.line(piece.ravel().tolist(), fill=255, width=w)
            # Round caps, and round joints where the pen turns enough to leave a notch; PIL's
            # joint="curve" rounds every joint in Python and costs more than the line itself.
            round_at = [0, len(piece) - 1]
            if w > 3 and len(piece) > 2:
                d = np.diff(piece, axis=0)
                cross = np.abs(d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0])
                dot = (d[:-1] * d[1:]).sum(1)
                turns = np.flatnonzero((dot <= 0) | (cross > 0.36 * dot))  # turns over 20 degrees
                round_at += (turns + 1).tolist()
            for x, y in piece[round_at].tolist():
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    img = img.reduce(s)
    return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


@functools.cache
def _allograph_table(writer_name: str, digit: int) -> tuple[tuple[_Strokes, ...], np.ndarray]:
    """The digit's allographs and their cumulative choice weights for one writer."""
    writer = _WRITERS[writer_name][1]
    options = _skeletons()[0][digit]
    weights = np.array([3.0 if f"{digit}:{n}" in writer.prefers else 1.0 for n in options])
    return tuple(options.values()), np.cumsum(weights / weights.sum())


def _pick_allograph(writer_name: str, digit: int, rng: np.random.Generator) -> _Strokes:
    options, cumulative = _allograph_table(writer_name, digit)
    return options[min(int(np.searchsorted(cumulative, rng.random())), len(options) - 1)]


def _render_pen(
    writer_name: str, skeleton: _Strokes, rng: np.random.Generator, size: int
) -> np.ndarray:
    writer = _WRITERS[writer_name][1]
    strokes, width = _pen_strokes(skeleton, writer, rng, size, rng.uniform(0.5, 0.8))
    return _draw_strokes(strokes, width, rng, size, broken=0.12)


# ---------------------------------------------------------------------------------------------
# Fonts


@dataclass(frozen=True)
class _FontFile:
    name: str
    split: str
    path: Path
    install: str  # the command that installs it


def _matplotlib_fonts() -> list[_FontFile]:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the train extra has it
        raise GlyphSourceMissing("matplotlib is not installed: pip install -e '.[train]'") from exc
    base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    stems = [
        "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
        "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
        "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
        "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic",
        "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmtt10", "cmti10",
    ]  # fmt: skip
    return [
        _FontFile(f"font:{s}", "train", base / f"{s}.ttf", "pip install -e '.[train]' (matplotlib)")
        for s in stems
    ]


def _pip_font_dir(module: str, package: str) -> Path:
    try:
        root = importlib.resources.files(module)
    except ImportError as exc:
        raise GlyphSourceMissing(
            f"the training font package {package} is not installed: "
            f"pip install -e '.[train]' (or pip install {package})"
        ) from exc
    return Path(str(root / "files"))


def _train_fonts() -> list[_FontFile]:
    amatic = _pip_font_dir("font_amatic_sc", "font-amatic-sc")
    intuitive = _pip_font_dir("font_intuitive", "font-intuitive")
    pip_cmd = "pip install -e '.[train]'"
    return [
        *_matplotlib_fonts(),
        _FontFile("font:AmaticSC-Regular", "train", amatic / "AmaticSC-Regular.ttf", pip_cmd),
        _FontFile("font:AmaticSC-Bold", "train", amatic / "AmaticSC-Bold.ttf", pip_cmd),
        _FontFile("font:Intuitive", "train", intuitive / "Intuitive.ttf", pip_cmd),
    ]


# Debian's handwriting fonts. Left out after looking at their digits: fonts-femkeklaver (outline
# digits, hollow), fonts-breip (its 0 is an open U).
_HELDOUT_PACKAGES = (
    "fonts-dkg-handwriting fonts-bwht fonts-humor-sans fonts-klee fonts-rufscript "
    "fonts-comic-neue fonts-dancingscript"
)
_APT = f"sudo apt-get install -y {_HELDOUT_PACKAGES}"
_HELDOUT_FONTS: tuple[tuple[str, str], ...] = (
    ("dkg", "truetype/fifthhorseman/dkg.ttf"),
    ("dkg-Bold", "truetype/fifthhorseman/dkgBd.ttf"),
    ("dkg-Italic", "truetype/fifthhorseman/dkgIt.ttf"),
    ("dkg-BoldItalic", "truetype/fifthhorseman/dkgBI.ttf"),
    ("BecauseWeBuild", "opentype/bwht/BecauseWeBuild-Regular.otf"),
    ("BecauseWeConnect", "opentype/bwht/BecauseWeConnect-Regular.otf"),
    ("BecauseWeCreate", "opentype/bwht/BecauseWeCreate-Regular.otf"),
    ("BecauseWeLearn", "opentype/bwht/BecauseWeLearn-Regular.otf"),
    ("BecauseWeMentor", "opentype/bwht/BecauseWeMentor-Regular.otf"),
    ("BecauseWeOrganize", "opentype/bwht/BecauseWeOrganize-Regular.otf"),
    ("HumorSans", "truetype/humor-sans/Humor-Sans.ttf"),
    ("KleeOne", "truetype/klee/KleeOne-Regular.ttf"),
    ("KleeOne-SemiBold", "truetype/klee/KleeOne-SemiBold.ttf"),
    ("Rufscript", "truetype/rufscript/Rufscript010.ttf"),
    ("ComicNeue", "opentype/comic-neue/ComicNeue-Regular.otf"),
    ("ComicNeue-Bold", "opentype/comic-neue/ComicNeue-Bold.otf"),
    ("ComicNeue-Italic", "opentype/comic-neue/ComicNeue-Italic.otf"),
    ("ComicNeue-Light", "opentype/comic-neue/ComicNeue-Light.otf"),
    ("DancingScript", "opentype/dancingscript/DancingScript-Regular.otf"),
    ("DancingScript-Bold", "opentype/dancingscript/DancingScript-Bold.otf"),
)
FONT_ROOT = Path("/usr/share/fonts")


def _heldout_fonts() -> list[_FontFile]:
    return [
        _FontFile(f"font:{name}", "heldout", FONT_ROOT / rel, _APT) for name, rel in _HELDOUT_FONTS
    ]


@functools.cache
def _font_files(split: str) -> dict[str, _FontFile]:
    files = _train_fonts() if split == "train" else _heldout_fonts()
    missing = [f for f in files if not f.path.is_file()]
    if missing:
        raise GlyphSourceMissing(
            f"{len(missing)} {split} font file(s) missing, e.g. {missing[0].path}; "
            f"install them with: {missing[0].install}"
        )
    return {f.name: f for f in files}


@functools.cache
def _font_object(path: Path, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), px)


@functools.cache
def _font_chars(path: Path) -> frozenset[str]:
    """The characters the font maps to a glyph (from its cmap), so no tofu box sneaks in."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]  # matplotlib's dependency

    with TTFont(str(path), lazy=True) as font:
        return frozenset(chr(c) for c in font.getBestCmap())


@functools.cache
def _ink_height_ratio(path: Path) -> float:
    """Ink height of the digits per pixel of font size (fonts differ widely)."""
    font = _font_object(path, 100)
    bbox = font.getmask("0123456789").getbbox()
    return max(0.2, (bbox[3] - bbox[1]) / 100) if bbox else 0.7


# Font sizes are rendered at steps of this many pixels and cached; the transform does the rest.
_SIZE_STEP = 3


@functools.cache
def _font_mask(path: Path, char: str, px: int, stroke: int) -> tuple[Image.Image, bool, float]:
    """One character, white on black, cropped to its ink, at a font size and stroke width;
    whether its strokes are thick enough to thin (a 3x3 erosion keeps half the ink); and its
    mean stroke thickness in pixels (twice the area over the outline's length)."""
    font = _font_object(path, px)
    pad = stroke + 2
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    img = Image.new("L", (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad), 0)
    ImageDraw.Draw(img).text(
        (pad - left, pad - top), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    box = img.getbbox()
    img = img.crop(box) if box else img
    ink = np.asarray(img, dtype=np.float32).sum()
    eroded = np.asarray(img.filter(ImageFilter.MinFilter(3)), dtype=np.float32).sum()
    solid = np.asarray(img) > 127
    outline = (solid[1:] != solid[:-1]).sum() + (solid[:, 1:] != solid[:, :-1]).sum()
    thickness = 2.0 * solid.sum() / max(1, outline)
    return img, bool(eroded >= 0.5 * ink), float(thickness)


def _render_font(
    path: Path, char: str, rng: np.random.Generator, size: int, marker: float = 0.0
) -> np.ndarray:
    """A font glyph reshaped at random: weight, slant, rotation, proportions, elastic mesh;
    with probability `marker`, written with a thick marker (strokes widened until the glyph's
    small counters close up, as a felt tip does)."""
    # One draw for every scalar: a generator call costs microseconds, and so does numpy on a
    # 2x2 matrix, so the geometry below is plain Python floats.
    r = rng.random(16).tolist()
    height = (0.5 + 0.3 * r[0]) * size
    px = max(8, _SIZE_STEP * round(height / _ink_height_ratio(path) / _SIZE_STEP))
    stroke = (0 if r[1] < 0.6 else 1 if r[1] < 0.92 else 2) * max(1, round(px / 60))
    # Hairline fonts (Amatic SC) would vanish at small sizes: keep strokes >= 1.3 px on the canvas.
    plain, _, thickness = _font_mask(path, char, px, 0)
    shrink = height / max(plain.size[1], 1)
    stroke = max(stroke, math.ceil((1.3 / shrink - thickness) / 2))
    mask, erodible, _ = _font_mask(path, char, px, stroke)
    mw, mh = mask.size
    # Forward map (glyph -> canvas) M = rotate @ [[sx, -slant*scale], [0, scale]].
    scale = height / max(mh, 1)
    sx = scale * (0.8 + 0.4 * r[2])
    slant = -0.15 + 0.45 * r[3]
    angle = math.radians(-7 + 14 * r[4])
    cos, sin = math.cos(angle), math.sin(angle)
    a, b = cos * sx, -cos * slant * scale - sin * scale
    c, d = sin * sx, -sin * slant * scale + cos * scale
    # The glyph's extent on the canvas (its box's corners about the centre), kept inside.
    half_w = (abs(a) * mw + abs(b) * mh) / 2
    half_h = (abs(c) * mw + abs(d) * mh) / 2
    cx = half_w + 1 + r[5] * max(0.0, size - 2 - 2 * half_w)
    cy = half_h + 1 + r[6] * max(0.0, size - 2 - 2 * half_h)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    # A 2x2 mesh with its inner corner at the glyph's centre: moving the nine mesh points at
    # random bends the glyph piecewise-bilinearly (an elastic distortion at one transform call
    # per cell; PIL's MESH transform costs a Python round trip per cell).
    wobble = (r[7] * 0.06) * mh
    xs = (0.0, cx, float(size))
    ys = (0.0, cy, float(size))
    jitter = iter(rng.normal(0.0, wobble / 2 + 1e-9, 18).tolist())
    src = {}
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            dx, dy = x - cx, y - cy
            src[i, j] = (
                ia * dx + ib * dy + mw / 2 + next(jitter),
                ic * dx + id_ * dy + mh / 2 + next(jitter),
            )
    mesh = []
    for j in range(2):
        for i in range(2):
            box = (round(xs[i]), round(ys[j]), round(xs[i + 1]), round(ys[j + 1]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            nw, sw, se, ne = src[i, j], src[i, j + 1], src[i + 1, j + 1], src[i + 1, j]
            mesh.append((box, (*nw, *sw, *se, *ne)))
    out = mask.transform((size, size), Image.Transform.MESH, mesh, Image.Resampling.BILINEAR)
    # Thinner strokes now and then, where the glyph has strokes thick enough to erode.
    if stroke == 0 and erodible and r[8] < 0.3:
        out = out.filter(ImageFilter.MinFilter(3))
    if r[14] < marker:
        # r[14] and r[15] were drawn with the rest: the stream of draws, and so every glyph of
        # the field set (which never asks for a marker), stays the same.
        radius = max(1, round((0.03 + 0.06 * r[15]) * height))
        out = out.filter(ImageFilter.MaxFilter(2 * radius + 1))
    if r[9] < 0.08:
        # A broken stroke: a short line of paper across the glyph.
        x = cx + (r[10] - 0.5) * half_w
        y = cy + (r[11] - 0.5) * 1.6 * half_h
        t = r[12] * math.pi
        length = 2 + 3 * r[13]
        ex, ey = length * math.cos(t), length * math.sin(t)
        ImageDraw.Draw(out).line(
            (x - ex, y - ey, x + ex, y + ey), fill=0, width=max(1, round(height / 30))
        )
    return np.asarray(out, dtype=np.float32) * np.float32(1 / 255)


# ---------------------------------------------------------------------------------------------
# Public API


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def sources(split: str) -> list[GlyphSource]:
    """Every glyph source of a split. Raises GlyphSourceMissing naming the package to install."""
    _check_split(split)
    pens = [GlyphSource(f"pen:{name}", "pen", s) for name, (s, _) in _WRITERS.items() if s == split]
    fonts = [GlyphSource(f.name, "font", split) for f in _font_files(split).values()]
    return pens + fonts


def _font_path(source: GlyphSource) -> Path:
    return _font_files(source.split)[source.name].path


def render_digit(
    source: GlyphSource, digit: int, rng: np.random.Generator, size: int = 64, marker: float = 0.0
) -> np.ndarray:
    """One digit from a source: float32 (size, size) ink coverage, 1 = ink, 0 = paper.

    The glyph is 50-80 % of the height, anywhere inside the canvas, antialiased, and random
    per call in stroke width, slant, proportions, rotation, wobble and broken strokes; a font's
    glyph is written with a thick marker with probability `marker`.
    """
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, not {digit}")
    if source.family == "pen":
        writer_name = source.name.removeprefix("pen:")
        return _render_pen(writer_name, _pick_allograph(writer_name, digit, rng), rng, size)
    if source.family == "font":
        return _render_font(_font_path(source), str(digit), rng, size, marker)
    raise ValueError(f"unknown glyph family {source.family!r}")


def _scribble(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random pen scribble: a smooth random walk, a zigzag or a tangle of loops."""
    style = int(rng.integers(3))
    if style == 0:
        ctrl = rng.uniform(0.0, 1.0, size=(int(rng.integers(4, 9)), 2))
        pts = np.concatenate(
            [_bezier(tuple(a), tuple((a + b) / 2 + rng.normal(0, 0.2, 2)), tuple(b), n=10)
             for a, b in itertools.pairwise(ctrl)]
        )  # fmt: skip
    elif style == 1:
        n = int(rng.integers(4, 10))
        xs = np.linspace(0, 1, n)
        ys = np.where(np.arange(n) % 2 == 0, 0.0, 1.0) * rng.uniform(0.3, 1.0)
        pts = np.stack([xs, ys + rng.normal(0, 0.05, n)], 1)
    else:
        t = np.linspace(0, 2 * math.pi * rng.uniform(2, 5), 120)
        r = 0.25 + 0.05 * rng.normal(size=1)
        pts = np.stack(
            [0.5 + r * np.cos(t) + t / t[-1] * 0.4, 0.5 + r * np.sin(t) * rng.uniform(0.5, 1)], 1
        )
    writer = _Writer((-0.2, 0.2), (0.6, 1.2), (0.03, 0.12), (0.0, 0.01), (0.0, 0.05), (-30, 30))
    strokes, width = _pen_strokes(
        _Strokes.of((_densify(pts),)), writer, rng, size, rng.uniform(0.3, 0.8)
    )
    return _draw_strokes(strokes, width, rng, size, broken=0.0)


def render_negative(kind: str, split: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Something that is not a digit, in render_digit's format.

    kind "letter" and "symbol" draw from the split's own sources (pen writers or fonts);
    "scribble" is a synthetic pen scribble.
    """
    _check_split(split)
    if kind == "scribble":
        return _scribble(rng, size)
    if kind not in ("letter", "symbol"):
        raise ValueError(f"kind must be one of {NEGATIVE_KINDS}, not {kind!r}")
    options = sources(split)
    source = options[int(rng.integers(len(options)))]
    if source.family == "pen":
        chars = _PEN_LETTERS if kind == "letter" else _PEN_SYMBOLS
        char = chars[int(rng.integers(len(chars)))]
        writer_name = source.name.removeprefix("pen:")
        return _render_pen(writer_name, _skeletons()[1][char], rng, size)
    path = _font_path(source)
    have = _font_chars(path)
    chars = "".join(
        c for c in (NEGATIVE_LETTERS if kind == "letter" else NEGATIVE_SYMBOLS) if c in have
    )
    if not chars:  # a font without any of them: one of this split's pen writers instead
        pens = [s for s in options if s.family == "pen"]
        char = (_PEN_LETTERS if kind == "letter" else _PEN_SYMBOLS)[0]
        return _render_pen(pens[0].name.removeprefix("pen:"), _skeletons()[1][char], rng, size)
    return _render_font(path, chars[int(rng.integers(len(chars)))], rng, size)


# ---------------------------------------------------------------------------------------------
# Drawings: digits drawn with a mouse on the try-it page's pad (app/static/app.js)

PAD_SIDE = 280  # the pad's canvas, in pixels (app/static/index.html)
PAD_BRUSH = 1 / 11  # the page's brush width, of the pad's side (app.js STROKE_FRACTION)
# Brush widths drawn, of the pad's side: thin to thick around the page's own.
DRAWING_BRUSH = (1 / 24, 1 / 7)
# How much of the pad's height a drawn digit takes: drawn small to drawn as large as it goes.
DRAWING_HEIGHT = (0.25, 0.92)
MAX_BRUSH_TO_HEIGHT = 0.3
# Mouse travel between two pointer events, of the pad's side (a slow hand to a fast one).
DRAWING_STEP = (0.008, 0.07)

# A hand drawing with a mouse: its shape ranges (the stroke width, tremor and placement are the
# drawing's own, below). Not one of _WRITERS, so sources() and the field set stay as they were.
_MOUSE_HAND = _Writer((-0.15, 0.35), (0.45, 0.9), (0.0, 0.0), (0.0, 0.0), (0.0, 0.05), (-10, 10))


def _flagged_one(rng: np.random.Generator) -> _Strokes:
    """A 1 whose flag (or lead-in up-stroke) has a random length and angle, sometimes curved
    into the stem, with or without a base."""
    r = rng.random(6)
    length = 0.08 + 0.6 * r[0]  # of the height: a tick to a long lead-in
    angle = math.radians(18 + 55 * r[1])  # below the horizontal, at the top of the stem
    top = (0.55, 0.0)
    start = (top[0] - length * math.cos(angle), length * math.sin(angle))
    if r[2] < 0.3:  # the lead-in curves into the top instead of running straight
        bend = (0.5 * (start[0] + top[0]) - 0.08, 0.5 * start[1] - 0.08)
        flag = _bezier(start, bend, top, n=8)
    else:
        flag = np.array([start, top])
    strokes = [_path(flag, [(0.55 + 0.06 * (r[3] - 0.5), 1.0)])]
    if r[4] < 0.35:
        half = 0.15 + 0.2 * r[5]
        strokes.append(_path([(0.55 - half, 1.0), (0.55 + half, 1.0)]))
    return _Strokes.of(tuple(strokes))


def _mouse_events(stroke: np.ndarray, rng: np.random.Generator, step: float) -> np.ndarray:
    """The pointer positions a browser reports along one pen-down stroke (pixels in, pixels out).

    Events come at a steady rate, so their spacing is the hand's speed: slow where the stroke
    starts, faster on, with a few random changes of pace. The canvas joins them with straight
    segments, so a fast hand cuts the corners and flattens the curves between two events."""
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(arc[-1])
    if total < 1e-6:
        return stroke[:1]
    knots = rng.uniform(0.35, 1.65, 5)  # pace changes along the stroke
    ramp = rng.uniform(0.05, 0.25) * total  # the hand speeds up over this much of the stroke
    at, s = [0.0], 0.0
    while True:
        pace = float(np.interp(s / total, np.linspace(0, 1, len(knots)), knots))
        s += max(0.5, step * pace * min(1.0, 0.25 + s / ramp))
        if s >= total:
            break
        at.append(s)
    at.append(total)
    t = np.asarray(at)
    return np.stack([np.interp(t, arc, stroke[:, 0]), np.interp(t, arc, stroke[:, 1])], axis=1)


def _draw_on_pad(strokes: list[np.ndarray], brush: float, side: int) -> np.ndarray:
    """Strokes painted as the page's canvas paints them: straight segments between pointer
    events, round caps and joins, `brush` px wide; antialiased by supersampling. (side, side)."""
    s = 2
    img = Image.new("L", (side * s, side * s), 0)
    draw = ImageDraw.Draw(img)
    w = max(1, round(brush * s))
    r = w / 2
    for stroke in strokes:
        pts = stroke * s
        if len(pts) >= 2:
            draw.line(pts.ravel().tolist(), fill=255, width=w)
        for x, y in pts.tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    img = img.reduce(s)
    return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


def _render_drawing(skeleton: _Strokes, rng: np.random.Generator, side: int) -> np.ndarray:
    r = rng.random(4)
    height = DRAWING_HEIGHT[0] + (DRAWING_HEIGHT[1] - DRAWING_HEIGHT[0]) * r[0]
    # Brush widths spread evenly on a log scale between thin and thick.
    lo, hi = math.log(DRAWING_BRUSH[0]), math.log(DRAWING_BRUSH[1])
    # A stroke at most 30 % of the digit's height: thicker than that, a person draws larger.
    brush = min(math.exp(lo + (hi - lo) * r[1]), MAX_BRUSH_TO_HEIGHT * height) * side
    step = (DRAWING_STEP[0] + (DRAWING_STEP[1] - DRAWING_STEP[0]) * r[2] ** 1.5) * side
    jitter = (0.0005 + 0.0045 * r[3]) * side  # the hand's wobble, per event
    # _pen_strokes places the glyph anywhere on the pad (off-centre included), a width's margin
    # from its edges; the pen's own width there is the writer's (0), the brush is ours.
    strokes, _ = _pen_strokes(skeleton, _MOUSE_HAND, rng, side, height)
    events = []
    for stroke in strokes:
        points = _mouse_events(stroke, rng, step)
        points = points + rng.normal(0.0, jitter, points.shape)
        events.append(np.clip(points, 0, side - 1))
    return _draw_on_pad(events, brush, side)


def render_drawing(digit: int, rng: np.random.Generator, side: int = PAD_SIDE) -> np.ndarray:
    """One digit drawn with a mouse on the try-it page's pad: float32 (side, side) ink coverage.

    The skeleton is one of the pen allographs (a 1's flag of any length and angle, with or
    without a base; a 7 plain, barred or curved; a 4 open or closed; ...), shaped by a hand
    (slant, proportions, a smooth wave, rotation), placed anywhere on the pad at 25-92 % of its
    height, sampled as a mouse reports it (changes of pace, jitter) and painted with a round
    brush 1/24 to 1/7 of the pad wide (the page's is 1/11). Deterministic given the generator.
    """
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, not {digit}")
    if digit == 1 and rng.random() < 0.6:
        skeleton = _flagged_one(rng)
    else:
        options = tuple(_skeletons()[0][digit].values())
        skeleton = options[int(rng.integers(len(options)))]
    return _render_drawing(skeleton, rng, side)


def render_drawn_negative(rng: np.random.Generator, side: int = PAD_SIDE) -> np.ndarray:
    """Something that is not a digit, drawn with a mouse on the pad (a pen letter or symbol, or
    a scribble), in render_drawing's format."""
    letters = _skeletons()[1]
    if rng.random() < 0.25:
        pts = rng.uniform(0.0, 1.0, size=(int(rng.integers(4, 9)), 2))
        curve = np.concatenate(
            [_bezier(tuple(a), tuple((a + b) / 2 + rng.normal(0, 0.2, 2)), tuple(b), n=10)
             for a, b in itertools.pairwise(pts)]
        )  # fmt: skip
        skeleton = _Strokes.of((_densify(curve),))
    else:
        chars = sorted(letters)
        skeleton = letters[chars[int(rng.integers(len(chars)))]]
    return _render_drawing(skeleton, rng, side)
