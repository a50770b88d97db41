"""Photographs of glyphs: ink put onto paper, lines, light, camera and file format.

`photograph(ink, scene, rng)` takes a glyph's ink coverage (training.glyphs' format: float32,
1 = ink) and returns the file a phone or a drawing app would have saved: a JPEG or PNG of
anything from a ~60 px crop to a 12-megapixel photo, with the scene's paper (plain, ruled with
a margin line, squared), its ink (ballpoint, pencil, marker, light strokes on a dark app
canvas), uneven light and shadow, paper texture, sensor noise, blur, vignetting, sometimes the
page's edge and the desk, and the digit anywhere in the frame. An all-zero ink gives the same
scene with nothing written on it (a blank page). `noise_image` and `texture_image` make the
negatives that are not paper at all.

NumPy and Pillow only. Every call is deterministic given the generator.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

SCENES = (
    "plain_uneven_light",
    "ruled",
    "squared",
    "ballpoint_blue",
    "pencil",
    "marker",
    "dark_app",
    "perspective",
    "jpeg_phone",
    "phone_12mp",
)

# Compose at most this many pixels on the long side, then scale up: a 12-megapixel photo's
# paper and light are smooth, and its digit was drawn at a glyph's resolution anyway.
_WORK_SIDE = 640

_BLACK_PEN = (0.08, 0.08, 0.1)
_BLUE_BALLPOINT = (0.1, 0.18, 0.55)
_GRAPHITE = (0.3, 0.3, 0.33)
_MARKERS = (
    (0.05, 0.05, 0.05),
    (0.8, 0.1, 0.1),
    (0.1, 0.45, 0.15),
    (0.1, 0.2, 0.7),
    (0.45, 0.1, 0.5),
)
_APP_STROKES = ((1.0, 1.0, 1.0), (1.0, 0.92, 0.3), (0.4, 0.9, 1.0), (0.6, 1.0, 0.5))


@dataclass(frozen=True)
class Photo:
    """An encoded image file, as a phone or an app would have saved it."""

    data: bytes
    format: str  # "PNG" or "JPEG"
    width: int
    height: int


def _smooth_noise(h: int, w: int, cells: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 noise, about N(0, 1), that varies over `cells` blobs across the image."""
    gh = max(2, round(cells * h / max(h, w)) + 1)
    gw = max(2, round(cells * w / max(h, w)) + 1)
    small = Image.fromarray(rng.standard_normal((gh, gw), dtype=np.float32), mode="F")
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def _line_coverage(coords: np.ndarray, positions: np.ndarray, width: float) -> np.ndarray:
    """Antialiased coverage of lines `width` px thick centred at `positions`, along `coords`."""
    if len(positions) == 0:
        return np.zeros_like(coords)
    distance = np.abs(coords[:, None] - positions[None, :]).min(axis=1)
    cover: np.ndarray = np.clip(width / 2 + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    return cover


def _paper(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) paper in [0, 1]: an off-white tint, slow unevenness and fibre grain."""
    base = np.array([0.95, 0.94, 0.9]) + rng.uniform(-0.05, 0.04, 3)
    base[2] -= rng.uniform(0.0, 0.06)  # recycled and old paper is yellower
    tone = 1.0 + 0.015 * _smooth_noise(h, w, 6, rng)
    grain = 1.0 + rng.uniform(0.005, 0.025) * rng.standard_normal((h, w), dtype=np.float32)
    paper: np.ndarray = np.clip((tone * grain)[..., None] * base.astype(np.float32), 0.0, 1.0)
    return paper


def _rule(
    paper: np.ndarray, scene: str, digit_box: tuple[int, int, int], rng: np.random.Generator
) -> None:
    """Ruled lines and a margin, or a grid, printed onto the paper (in place)."""
    h, w, _ = paper.shape
    _, left, side = digit_box
    ys = np.arange(h, dtype=np.float32)
    xs = np.arange(w, dtype=np.float32)
    if scene == "ruled":
        # A line every 0.5-1.1 digit heights: the digit spans one or two lines, or sits on one.
        spacing = side * rng.uniform(0.5, 1.1)
        rows = np.arange(rng.uniform(0, spacing), h, spacing)
        colour = np.array([0.45, 0.6, 0.85]) + rng.uniform(-0.1, 0.1, 3)
        cover = _line_coverage(ys, rows, rng.uniform(0.8, 2.5) * max(1.0, side / 60))
        alpha = rng.uniform(0.35, 0.8) * cover[:, None] * np.ones((1, w), np.float32)
        paper *= 1 - alpha[..., None] * (1 - colour.astype(np.float32))
        # The margin: left of the digit, sometimes through it, one or two pink/red lines.
        margin_x = left + side * rng.uniform(-1.5, 0.6)
        lines = [margin_x] if rng.random() < 0.7 else [margin_x, margin_x + rng.uniform(3, 8)]
        red = np.array([0.9, 0.3, 0.35]) + rng.uniform(-0.1, 0.08, 3)
        cover = _line_coverage(xs, np.array(lines), rng.uniform(1.0, 3.0) * max(1.0, side / 80))
        alpha = rng.uniform(0.5, 0.9) * cover[None, :] * np.ones((h, 1), np.float32)
        paper *= 1 - alpha[..., None] * (1 - red.astype(np.float32))
    elif scene == "squared":
        spacing = side * rng.uniform(0.3, 0.6)
        width = rng.uniform(0.6, 1.8) * max(1.0, side / 80)
        cover_y = _line_coverage(ys, np.arange(rng.uniform(0, spacing), h, spacing), width)
        cover_x = _line_coverage(xs, np.arange(rng.uniform(0, spacing), w, spacing), width)
        cover = np.maximum(cover_y[:, None], cover_x[None, :])
        colour = np.array([0.5, 0.65, 0.8]) + rng.uniform(-0.15, 0.1, 3)
        alpha = rng.uniform(0.3, 0.7) * cover
        paper *= 1 - alpha[..., None] * (1 - colour.astype(np.float32))


def _ink_style(scene: str, rng: np.random.Generator) -> tuple[np.ndarray, float, int, float]:
    """The ink's colour, opacity, dilation (thicker marker strokes) and grain for a scene."""
    if scene == "ballpoint_blue":
        return (
            np.array(_BLUE_BALLPOINT) + rng.uniform(-0.05, 0.1, 3),
            rng.uniform(0.75, 0.95),
            0,
            0.1,
        )
    if scene == "pencil":
        grey = rng.uniform(0.2, 0.45)
        return np.array([grey, grey, grey + 0.02]), rng.uniform(0.3, 0.65), 0, 0.45
    if scene == "marker":
        colour = _MARKERS[int(rng.integers(len(_MARKERS)))]
        return (
            np.array(colour) + rng.uniform(-0.05, 0.05, 3),
            rng.uniform(0.85, 1.0),
            int(rng.integers(1, 4)),
            0.0,
        )
    if scene == "dark_app":
        return np.array(_APP_STROKES[int(rng.integers(len(_APP_STROKES)))]), 1.0, 0, 0.0
    # Everyday photos: a black or blue pen, now and then a pencil.
    choice = rng.random()
    if choice < 0.5:
        return np.array(_BLACK_PEN) + rng.uniform(0, 0.1), rng.uniform(0.8, 1.0), 0, 0.05
    if choice < 0.85:
        return (
            np.array(_BLUE_BALLPOINT) + rng.uniform(-0.05, 0.1, 3),
            rng.uniform(0.75, 0.95),
            0,
            0.1,
        )
    return np.array(_GRAPHITE), rng.uniform(0.45, 0.75), 0, 0.35


def _frame(scene: str, rng: np.random.Generator) -> tuple[int, int, float]:
    """Output width, height, and the digit's height as a fraction of the shorter side."""
    if scene == "phone_12mp":
        w, h = (4000, 3000) if rng.random() < 0.5 else (3000, 4000)
        return w, h, rng.uniform(0.08, 0.25)
    if scene == "dark_app":
        side = int(rng.choice([200, 256, 280, 300, 400, 512, 600]))
        w = side if rng.random() < 0.7 else int(side * rng.uniform(1.0, 1.8))
        return w, side, rng.uniform(0.4, 0.85)
    kind = rng.random()
    if kind < 0.35:  # a tight crop
        short = int(rng.integers(56, 200))
        frac = rng.uniform(0.45, 0.85)
    elif kind < 0.8:
        short = int(rng.integers(200, 900))
        frac = rng.uniform(0.25, 0.7)
    else:
        short = int(rng.integers(900, 2000))
        frac = rng.uniform(0.15, 0.5)
    ratio = (
        float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9]))
        if rng.random() < 0.7
        else rng.uniform(1, 1.5)
    )
    long = int(short * ratio)
    return (long, short, frac) if rng.random() < 0.5 else (short, long, frac)


def _place_ink(
    ink: np.ndarray, h: int, w: int, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The ink scaled to a `side` px square at a random place: (h, w) coverage, and its box."""
    n = ink.shape[0]
    img = Image.fromarray(ink.astype(np.float32), mode="F").resize(
        (side, side), Image.Resampling.BILINEAR
    )
    glyph = np.asarray(img, dtype=np.float32)
    factor = side / n
    if factor > 2:
        # Scaled up a lot, bilinear edges become a blur wider than any camera's: sharpen the
        # coverage back to about one output pixel of ramp.
        k = min(factor / 1.5, 8.0)
        glyph = np.clip((glyph - 0.5) * k + 0.5, 0.0, 1.0)
    alpha = np.zeros((h, w), np.float32)
    top = int(rng.integers(0, max(1, h - side + 1)))
    left = int(rng.integers(0, max(1, w - side + 1)))
    crop = glyph[: h - top, : w - left]
    alpha[top : top + crop.shape[0], left : left + crop.shape[1]] = np.clip(crop, 0.0, 1.0)
    return alpha, (top, left, side)


def _light(h: int, w: int, scene: str, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 1) illumination: a gradient, a soft shadow, vignetting and colour temperature."""
    strength = {"plain_uneven_light": 1.0, "perspective": 0.7, "phone_12mp": 0.7}.get(scene, 0.45)
    gh, gw = 48, max(2, round(48 * w / h))
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    yy, xx = yy / (gh - 1) - 0.5, xx / (gw - 1) - 0.5
    a = rng.uniform(0, 2 * math.pi)
    light = 1.0 - strength * rng.uniform(0.05, 0.45) * (0.5 + math.cos(a) * xx + math.sin(a) * yy)
    if rng.random() < 0.6 * strength + 0.2:
        # A soft shadow (a hand, a phone): a darker half-plane or blob with a blurred edge.
        b = rng.uniform(0, 2 * math.pi)
        edge = math.cos(b) * xx + math.sin(b) * yy - rng.uniform(-0.3, 0.4)
        soft = rng.uniform(0.03, 0.2)
        light *= 1.0 - strength * rng.uniform(0.15, 0.5) / (1.0 + np.exp(-edge / soft))
    light *= 1.0 - rng.uniform(0.0, 0.3) * (xx**2 + yy**2) * 2  # vignetting
    img = Image.fromarray(light.astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BICUBIC
    )
    tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.05, 0.05) * np.array([1.0, 0.0, -1.0])
    return np.asarray(img, dtype=np.float32)[..., None] * tint.astype(np.float32)


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL's PERSPECTIVE data mapping output points `dst` to input points `src` (4 x 2 each)."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs: list[float] = np.linalg.solve(np.array(rows, float), src.reshape(8)).tolist()
    return coeffs


def _desk(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A desk or table behind the page: wood grain, a plain dark or light surface."""
    colour = [np.array([0.45, 0.3, 0.18]), np.array([0.2, 0.2, 0.22]), np.array([0.7, 0.68, 0.64])][
        int(rng.integers(3))
    ]
    colour = colour + rng.uniform(-0.08, 0.08, 3)
    grain = 1.0 + 0.08 * np.sin(
        np.linspace(0, rng.uniform(20, 80), w, dtype=np.float32)[None, :]
        + 3 * _smooth_noise(h, w, 4, rng)
    )
    desk: np.ndarray = np.clip(grain[..., None] * colour.astype(np.float32), 0.0, 1.0)
    return desk


def _on_desk(page: np.ndarray, rng: np.random.Generator, tilt: float) -> np.ndarray:
    """The page seen by a camera: its corners moved by up to `tilt` of the frame, desk around."""
    h, w, _ = page.shape
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    # Corners pulled inwards (the page's edge shows) and sideways (the camera is at an angle).
    jitter = rng.uniform(0.0, tilt, size=(4, 2)) * [w, h]
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    dst = dst + inward * jitter * rng.uniform(0.2, 1.0)
    coeffs = _perspective_coeffs(dst, np.array([[0, 0], [w, 0], [w, h], [0, h]], float))
    out = np.empty_like(page)
    mask = Image.new("L", (w, h), 255).transform(
        (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    for c in range(3):
        chan = Image.fromarray(page[..., c], mode="F")
        out[..., c] = np.asarray(
            chan.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
        )
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255
    return out * m + _desk(h, w, rng) * (1 - m)


def _encode(
    rgb: np.ndarray,
    fmt: str,
    rng: np.random.Generator,
    quality: tuple[int, int] = (82, 95),
    size: tuple[int, int] | None = None,
) -> Photo:
    """The image as a file: scaled up to its output size, then JPEG (at a random quality in
    `quality`) or PNG (greyscale now and then, as scanners and apps export)."""
    img = Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), mode="RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    else:
        if rng.random() < 0.3:
            img = img.convert("L")
        img.save(buf, format="PNG")
    return Photo(buf.getvalue(), fmt, img.width, img.height)


def photograph(
    ink: np.ndarray, scene: str, rng: np.random.Generator, max_side: int | None = None
) -> Photo:
    """The file a phone or app would save of `ink` (float32 square, 1 = ink) in `scene`.

    `max_side` caps the output's longer side (the committed sample keeps its files small).
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, not {scene!r}")
    out_w, out_h, frac = _frame(scene, rng)
    out_w, out_h = _capped(out_w, out_h, max_side)
    scale = min(1.0, _WORK_SIDE / max(out_w, out_h))
    w, h = max(16, round(out_w * scale)), max(16, round(out_h * scale))
    side = max(12, round(frac * min(w, h)))
    colour, opacity, dilate, grain = _ink_style(scene, rng)
    alpha, box = _place_ink(ink, h, w, side, rng)
    if dilate:
        # Marker: thicker strokes, about a tenth of the digit more per step.
        steps = dilate * max(1, side // 60)
        a_img = Image.fromarray(alpha, mode="F")
        for _ in range(steps):
            a_img = a_img.filter(ImageFilter.MaxFilter(3))
        alpha = np.asarray(a_img, dtype=np.float32)
    if grain:
        alpha = alpha * np.clip(1.0 - grain * rng.random((h, w), dtype=np.float32), 0.0, 1.0)
    alpha = alpha * opacity

    if scene == "dark_app":
        canvas: np.ndarray = np.full((h, w, 3), rng.uniform(0.08, 0.2), np.float32)
        canvas = canvas * (1 - alpha[..., None]) + colour.astype(np.float32) * alpha[..., None]
        fmt = "PNG" if rng.random() < 0.85 else "JPEG"
        return _encode(canvas, fmt, rng, size=(out_w, out_h))

    paper = _paper(h, w, rng)
    _rule(paper, scene, box, rng)
    # Ink darkens the paper it lies on (lines under it included).
    rgb = paper * (1 - alpha[..., None] * (1 - colour.astype(np.float32)))
    if scene == "perspective":
        rgb = _on_desk(rgb, rng, tilt=rng.uniform(0.1, 0.3))
    elif side < 0.5 * min(w, h) and rng.random() < 0.25:
        rgb = _on_desk(rgb, rng, tilt=rng.uniform(0.02, 0.08))  # the page's edge and the desk
    rgb = rgb * _light(h, w, scene, rng)
    if scene == "pencil":
        # Pencil photos are dull: the paper greyer, the graphite never black.
        rgb = 0.25 + 0.65 * rgb + 0.05 * rng.random()
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    blur = rng.uniform(0.0, 1.2) * (1 if min(w, h) > 100 else 0.5)
    if blur > 0.5:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    rgb = np.asarray(img, dtype=np.float32) / 255
    sigma = rng.uniform(0.004, 0.03)
    rgb = rgb + sigma * rng.standard_normal((h, w, 1), dtype=np.float32)
    rgb = rgb + (sigma / 2) * rng.standard_normal((h, w, 3), dtype=np.float32)

    if scene == "jpeg_phone":
        return _encode(rgb, "JPEG", rng, quality=(60, 90), size=(out_w, out_h))
    if scene == "phone_12mp":
        return _encode(rgb, "JPEG", rng, quality=(80, 93), size=(out_w, out_h))
    # Crops are often PNG; a photo is a JPEG (a PNG of sensor noise is huge).
    fmt = "PNG" if max(out_w, out_h) <= 400 and rng.random() < 0.6 else "JPEG"
    return _encode(rgb, fmt, rng, size=(out_w, out_h))


def _capped(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(w, h) <= max_side:
        return w, h
    shrink = max_side / max(w, h)
    return max(16, round(w * shrink)), max(16, round(h * shrink))


def noise_image(rng: np.random.Generator, max_side: int | None = None) -> Photo:
    """Pure sensor noise: a dark or grey frame of noise with nothing in it."""
    w, h = _capped(int(rng.integers(28, 900)), int(rng.integers(28, 900)), max_side)
    mean = rng.uniform(0.05, 0.8)
    kind = rng.random()
    if kind < 0.5:
        rgb = mean + rng.uniform(0.02, 0.2) * rng.standard_normal((h, w, 1), dtype=np.float32)
        rgb = np.repeat(rgb, 3, axis=2)
    elif kind < 0.8:
        rgb = mean + rng.uniform(0.02, 0.2) * rng.standard_normal((h, w, 3), dtype=np.float32)
    else:
        rgb = rng.random((h, w, 3), dtype=np.float32)  # uniform noise
    fmt = "PNG" if max(w, h) <= 400 and rng.random() < 0.6 else "JPEG"
    return _encode(rgb, fmt, rng)


def texture_image(rng: np.random.Generator, max_side: int | None = None) -> Photo:
    """A surface with no writing: wood, fabric, or random blobs and stains."""
    w, h = _capped(int(rng.integers(40, 1000)), int(rng.integers(40, 1000)), max_side)
    kind = int(rng.integers(4))
    if kind == 0:
        rgb = _desk(h, w, rng)
    elif kind == 1:  # a woven fabric
        period = rng.uniform(2.5, 8)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        weave = np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)
        colour = rng.uniform(0.2, 0.8, 3).astype(np.float32)
        rgb = colour * (1 + 0.15 * weave + 0.05 * _smooth_noise(h, w, 10, rng))[..., None]
    elif kind == 2:  # blobs and stains on a surface
        field = _smooth_noise(h, w, rng.uniform(3, 12), rng)
        blobs = np.clip((field - rng.uniform(0.8, 1.6)) * 3, 0, 1)
        base = rng.uniform(0.5, 0.95, 3).astype(np.float32)
        stain = rng.uniform(0.1, 0.5, 3).astype(np.float32)
        rgb = base * (1 - blobs[..., None]) + stain * blobs[..., None]
    else:  # carpet or concrete: multi-scale noise
        level = rng.uniform(0.25, 0.75)
        layers = np.zeros((h, w), np.float32)
        for i, cells in enumerate((4, 16, 64)):
            layers += _smooth_noise(h, w, cells, rng) / (i + 1)
        rgb = np.repeat((level + 0.08 * layers)[..., None], 3, axis=2)
    rgb = rgb + 0.02 * rng.standard_normal((h, w, 1), dtype=np.float32)
    fmt = "PNG" if max(w, h) <= 400 and rng.random() < 0.5 else "JPEG"
    return _encode(rgb, fmt, rng)
