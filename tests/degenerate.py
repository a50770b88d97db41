"""Degenerate and hostile images, as files: every shape from 1x1 to extreme aspect ratios, every
mode, every accepted format, and contents that stress the photo pipeline (a dot, a line, a
diagonal, a block, a checkerboard, constant, noise, a gradient, random strokes).

`sweep()` is a fixed list (the same images every run: the before/after table of
docs/reliability.md counts it); `image_files()` is the Hypothesis strategy the fuzzers draw from.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from PIL import Image, ImageDraw

# Pillow's names for the formats the service accepts (app.imaging.ALLOWED_FORMATS).
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "HEIF", "AVIF")
MODES = ("L", "RGB", "RGBA", "LA", "P", "1", "I;16")
# The largest side each format can hold (WebP's limit; GIF, BMP and the others are larger).
MAX_SIDE = {"WEBP": 16383, "HEIF": 16384, "AVIF": 16384}


def _constant(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return np.full((h, w), int(rng.integers(0, 256)), np.uint8)


def _dot(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grey = np.full((h, w), 200, np.uint8)
    grey[int(rng.integers(0, h)), int(rng.integers(0, w))] = 20
    return grey


def _row(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grey = np.full((h, w), 230, np.uint8)
    grey[int(rng.integers(0, h)), :] = 10
    return grey


def _column(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grey = np.full((h, w), 230, np.uint8)
    grey[:, int(rng.integers(0, w))] = 10
    return grey


def _diagonal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grey = np.full((h, w), 240, np.uint8)
    n = max(h, w)
    grey[np.linspace(0, h - 1, n).astype(int), np.linspace(0, w - 1, n).astype(int)] = 0
    return grey


def _block(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grey = np.full((h, w), 220, np.uint8)
    grey[h // 4 : h - h // 4 or 1, w // 4 : w - w // 4 or 1] = 15
    return grey


def _checkerboard(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.integers(1, 5))
    ys, xs = np.indices((h, w))
    return np.where((ys // cell + xs // cell) % 2 == 0, 255, 0).astype(np.uint8)


def _noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _gradient(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.indices((h, w), dtype=np.float64)
    angle = float(rng.uniform(0, np.pi))
    ramp = ys * np.sin(angle) + xs * np.cos(angle)
    ramp -= ramp.min()
    return (255 * ramp / max(float(ramp.max()), 1.0)).astype(np.uint8)


def _strokes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (w, h), int(rng.integers(150, 256)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        points = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(4)]
        draw.line(points, fill=int(rng.integers(0, 90)), width=int(rng.integers(1, 6)))
    return np.asarray(image).copy()


CONTENTS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "constant": _constant,
    "dot": _dot,
    "row": _row,
    "column": _column,
    "diagonal": _diagonal,
    "block": _block,
    "checkerboard": _checkerboard,
    "noise": _noise,
    "gradient": _gradient,
    "strokes": _strokes,
}


def as_mode(grey: np.ndarray, mode: str, rng: np.random.Generator) -> Image.Image:
    """The grey array as a Pillow image of `mode`, with content in the extra bands (a tint,
    transparency) where the mode has them."""
    image = Image.fromarray(grey, mode="L")
    if mode == "L":
        return image
    if mode == "1":
        return image.convert("1")
    if mode == "P":
        return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257).convert("I;16")
    alpha = Image.fromarray(rng.integers(0, 256, grey.shape, dtype=np.uint8), mode="L")
    if mode == "LA":
        return Image.merge("LA", (image, alpha))
    tint = [image.point(lambda v, t=t: v * t // 255) for t in rng.integers(180, 256, 3)]
    rgb = Image.merge("RGB", tint)
    if mode == "RGB":
        return rgb
    return Image.merge("RGBA", (*rgb.split(), alpha))


def encode(image: Image.Image, fmt: str) -> bytes | None:
    """The image saved as `fmt`, converted first where the format cannot hold its mode; None
    where it cannot be saved at all (a side over the format's limit, a shape its encoder
    refuses)."""
    width, height = image.size
    if max(width, height) > MAX_SIDE.get(fmt, 65535):
        return None
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    savable = {
        "JPEG": ("L", "RGB"),
        "WEBP": ("RGB", "RGBA", "L"),
        "HEIF": ("L", "RGB", "RGBA"),
        "AVIF": ("L", "RGB", "RGBA"),
        "GIF": ("L", "P", "1"),
        "BMP": ("L", "RGB", "P", "1"),
    }.get(fmt)
    if savable is not None and image.mode not in savable:
        image = image.convert("RGBA" if "A" in image.getbands() and "RGBA" in savable else "RGB")
        if image.mode not in savable:
            image = image.convert(savable[0])
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (RuntimeError, ValueError, OSError):
        if fmt in ("HEIF", "AVIF"):  # their encoders refuse some tiny or odd shapes
            return None
        raise
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """One generated file, and how it was made (printed when a check fails)."""

    name: str
    data: bytes


# Shapes (height, width): tiny, one or two pixels thin, at the service's smallest side, and
# extreme aspect ratios on both sides of it.
SWEEP_SHAPES = (
    (1, 1),
    (1, 2),
    (2, 1),
    (1, 64),
    (64, 1),
    (2, 64),
    (64, 2),
    (3, 3),
    (7, 7),
    (7, 300),
    (8, 8),
    (8, 9),
    (8, 300),
    (300, 8),
    (9, 2000),
    (2000, 9),
    (12, 12),
    (28, 28),
    (30, 5000),
    (5000, 30),
    (64, 64),
)


@functools.cache
def sweep() -> tuple[Case, ...]:
    """Every shape of SWEEP_SHAPES with every content; modes and formats taken in turn, so that
    each shape meets each of them (made once per process: encoding them takes seconds)."""
    return tuple(_sweep())


def _sweep() -> Iterator[Case]:
    rng = np.random.default_rng(0)
    pairs = itertools.cycle(itertools.product(MODES, FORMATS))
    for (h, w), (content, make) in itertools.product(SWEEP_SHAPES, CONTENTS.items()):
        for _ in range(len(FORMATS)):
            mode, fmt = next(pairs)
            data = encode(as_mode(make(h, w, rng), mode, rng), fmt)
            if data is not None:
                yield Case(f"{h}x{w} {content} {mode} {fmt}", data)


SIDES = st.one_of(st.integers(1, 12), st.integers(13, 96), st.sampled_from((300, 1000, 3000, 6000)))


@st.composite
def image_files(draw: st.DrawFn) -> Case:
    """One image file of any shape, mode, content and accepted format."""
    h, w = draw(SIDES), draw(SIDES)
    if h * w > 4_000_000:  # extreme ratios are the point, not large files (each costs seconds)
        h = max(1, 4_000_000 // w)
    content = draw(st.sampled_from(sorted(CONTENTS)))
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = encode(as_mode(CONTENTS[content](h, w, rng), mode, rng), fmt)
    if data is None:
        data = encode(as_mode(CONTENTS[content](h, min(w, 8000), rng), mode, rng), "PNG")
        assert data is not None
    return Case(f"{h}x{w} {content} {mode} {fmt}", data)
