"""Digits and non-digits that MNIST lacks, framed exactly as the service frames an upload.

MNIST's writers are one population; people write with other pens, slants and shapes (a 1 with a
flag, a 7 with a bar, a closed 4), and they send things that are not digits at all. The pools
made here come from training.glyphs' *train* sources only (its held-out sources, and the Hershey
fonts of the project's independent check, are never used for training), and each glyph goes
through app.imaging's own MNIST framing, so the network sees them as it will see uploads.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app import imaging, ink, ink_params
from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import NoDigit
from app.imaging import NOISE_FLOOR, frame_like_mnist, prepare_image
from training import glyphs
from training.atomic import atomic_write

NOT_A_DIGIT = -1  # the label of a negative in a pool
# The service's photo pipeline, code and tuned numbers: what a pool made through it is keyed by.
PIPELINE_CODE = tuple(Path(m.__file__) for m in (imaging, ink, ink_params) if m.__file__)
# A share of the font digits written with a thick marker: photos of felt-tip digits have
# strokes so wide that a bold glyph's counters close, which neither MNIST nor a pen shows.
MARKER = 0.15


@dataclass
class GlyphPool:
    """images (N, 1, 28, 28) float32 in [0, 1], white on black; labels (N,) int64, digits 0..9
    or NOT_A_DIGIT."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> GlyphPool:
        return GlyphPool(self.images.to(device), self.labels.to(device))

    @property
    def digits(self) -> GlyphPool:
        keep = self.labels >= 0
        return GlyphPool(self.images[keep], self.labels[keep])

    @property
    def negatives(self) -> GlyphPool:
        keep = self.labels == NOT_A_DIGIT
        return GlyphPool(self.images[keep], self.labels[keep])


def frame(ink: np.ndarray) -> np.ndarray:
    """A rendered glyph (H, W) ink coverage in [0, 1] -> (28, 28) as the service frames it.

    Antialiasing leaves faint fringes that the service's paper removal would clear; clearing
    them here too keeps the crop (and so the digit's size in the frame) the same.
    """
    ink = np.where(ink < NOISE_FLOOR, 0.0, ink).astype(np.float32)
    return frame_like_mnist(ink)


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A shape that is no glyph: a few filled ellipses or a short thick smear, as stains,
    holes punched in paper or thumb marks look after the paper is removed."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        # Never long and thin: after framing, a thin ellipse is a fine "1".
        ry = rng.uniform(0.08, 0.3) * size
        rx = ry * rng.uniform(0.6, 1.6)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        out = np.maximum(out, ((u / rx) ** 2 + (v / ry) ** 2 <= 1).astype(np.float32))
    return out


def through_the_page(coverage: np.ndarray) -> np.ndarray | None:
    """A drawing on the try-it page's pad, (side, side) ink coverage in [0, 1], as the model
    sees it: the pad's PNG (white ink on black, as the page sends it) through the service's own
    app.imaging.prepare_image. None when the service finds no digit to read in it."""
    buffer = io.BytesIO()
    grey = (np.clip(coverage, 0.0, 1.0) * 255).round().astype(np.uint8)
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    try:
        return prepare_image(buffer.getvalue(), DEFAULT_MAX_IMAGE_PIXELS).pixels
    except NoDigit:
        return None


def render_drawings(digits: int, negatives: int, seed: int) -> GlyphPool:
    """`digits` digits (0..9 in turn) and `negatives` non-digits drawn with a mouse on the
    page's pad (training/glyphs.py render_drawing), each put through the service's pipeline as
    the page would send it; deterministic for `seed`. A drawing the pipeline refuses is drawn
    again (it would never reach the model)."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for i in range(digits + negatives):
        digit = i % 10 if i < digits else NOT_A_DIGIT
        for _ in range(5):
            ink = (
                glyphs.render_drawing(digit, rng)
                if digit != NOT_A_DIGIT
                else glyphs.render_drawn_negative(rng)
            )
            pixels = through_the_page(ink)
            if pixels is not None:
                images.append(pixels)
                labels.append(digit)
                break
    stack = torch.from_numpy(np.stack(images)).unsqueeze(1) if images else torch.zeros(0, 1, 28, 28)
    return GlyphPool(stack.float(), torch.tensor(labels, dtype=torch.long))


def render_pool(
    split: str, digits: int, negatives: int, seed: int, drawings: int = 0, drawn_negatives: int = 0
) -> GlyphPool:
    """`digits` digit glyphs (sources and digits in turn) and `negatives` non-digits (letters,
    symbols, scribbles from glyphs; blobs from here), all framed; deterministic for `seed`.
    With `drawings` / `drawn_negatives` (train split only), that many mouse drawings of digits
    and non-digits too (render_drawings, from another seed), after the glyphs."""
    pool = _render_glyphs(split, digits, negatives, seed)
    if not drawings and not drawn_negatives:
        return pool
    if split != "train":
        raise ValueError("mouse drawings are made for the train split only")
    drawn = render_drawings(drawings, drawn_negatives, seed + 500_000)
    return GlyphPool(torch.cat((pool.images, drawn.images)), torch.cat((pool.labels, drawn.labels)))


def _render_glyphs(split: str, digits: int, negatives: int, seed: int) -> GlyphPool:
    rng = np.random.default_rng(seed)
    sources = glyphs.sources(split)
    # Half from our pen writers, half from fonts: there are many more fonts than writers, and
    # strokes of varying width are what people draw and photograph.
    pens = [s for s in sources if s.family == "pen"] or sources
    fonts = [s for s in sources if s.family != "pen"] or sources
    images: list[np.ndarray] = []
    labels: list[int] = []
    for i in range(digits):
        digit = i % 10
        family = pens if (i // 10) % 2 == 0 else fonts
        source = family[(i // 20) % len(family)]
        images.append(frame(glyphs.render_digit(source, digit, rng, marker=MARKER)))
        labels.append(digit)
    kinds = (*glyphs.NEGATIVE_KINDS, "blob")
    for i in range(negatives):
        kind = kinds[i % len(kinds)]
        ink = _blob(rng, 64) if kind == "blob" else glyphs.render_negative(kind, split, rng)
        images.append(frame(ink))
        labels.append(NOT_A_DIGIT)
    stack = torch.from_numpy(np.stack(images)).unsqueeze(1) if images else torch.zeros(0, 1, 28, 28)
    return GlyphPool(stack.float(), torch.tensor(labels, dtype=torch.long))


def cached_pool(
    cache_dir: Path,
    split: str,
    digits: int,
    negatives: int,
    seed: int,
    drawings: int = 0,
    drawn_negatives: int = 0,
) -> GlyphPool:
    """render_pool, kept in `cache_dir` keyed by its arguments and the glyph code's own bytes,
    so a resumed or repeated training does not render the same glyphs again."""
    args: list[object] = [split, digits, negatives, seed]
    code = [Path(glyphs.__file__), Path(__file__)]
    if drawings or drawn_negatives:  # the key of a pool without drawings stays as it was
        args += [drawings, drawn_negatives]
        # Drawings go through the service's pipeline: a changed rule or number draws again.
        code += PIPELINE_CODE
    return cached(
        cache_dir / "glyphs",
        args,
        code,
        lambda: render_pool(split, digits, negatives, seed, drawings, drawn_negatives),
    )


def cached(
    stem: Path, args: list[object], code: list[Path], make: Callable[[], GlyphPool]
) -> GlyphPool:
    """`make()`, saved as `<stem>-<hash>.pt` and read back from there, the hash taken over `args`
    and the bytes of the `code` files that make the pool (changed code makes it again)."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in code)).hexdigest()
    key = json.dumps([*args, digest])
    path = stem.parent / f"{stem.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return GlyphPool(saved["images"], saved["labels"])
    pool = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"images": pool.images, "labels": pool.labels}, tmp))
    return pool
