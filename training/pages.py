"""Page negatives: what the service's own pipeline finds on photos of blank paper.

Most blank photos are refused before the model (the pipeline sees no ink); the few that are not
hold a stretch of a page's edge, a shadow's rim, a desk's pattern or a smudge, framed like a
digit, and the model read most of them as a 1 or a 7. No glyph font makes those, so they are
mined: blank pages photographed in every scene (training.scenes, the field set's own scene
code), each put through app.imaging.prepare_image, and whatever reaches the model is kept as a
not-a-digit example for training (training/train.py) and validation.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from app import imaging
from app.errors import ServiceError
from training import scenes
from training.synthetic import NOT_A_DIGIT, PIPELINE_CODE, GlyphPool, cached

STREAM = 7  # keeps these photos' random streams apart from training.fieldset's
_GLYPH_SIDE = 96  # a blank glyph of training.fieldset's side: the same scene framing


def page_crop(seed: int, index: int) -> np.ndarray | None:
    """Photograph blank page `index` of `seed` and prepare it as the service would: its (28, 28)
    model input, or None where the pipeline already refuses it (it sees no ink)."""
    rng = np.random.default_rng([seed, STREAM, index])
    scene = scenes.SCENES[index % len(scenes.SCENES)]
    photo = scenes.photograph(np.zeros((_GLYPH_SIDE,) * 2, np.float32), scene, rng)
    try:
        return imaging.prepare_image(photo.data, max_pixels=photo.width * photo.height).pixels
    except ServiceError:
        return None


def _page_crops(args: tuple[int, int, int]) -> list[np.ndarray]:
    seed, start, stop = args
    return [c for c in (page_crop(seed, i) for i in range(start, stop)) if c is not None]


def mine_pages(photos: int, seed: int, workers: int = 1) -> GlyphPool:
    """The page negatives among `photos` blank-page photos of `seed`; the same pool whatever
    the worker count."""
    # A few chunks per worker: small enough to balance, large enough to pay for the hand-off.
    step = max(1, min(250, -(-photos // (4 * workers))))
    jobs = [(seed, at, min(at + step, photos)) for at in range(0, photos, step)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_page_crops, jobs))
    else:
        parts = [_page_crops(job) for job in jobs]
    crops = [c for part in parts for c in part]
    stack = torch.from_numpy(np.stack(crops)).unsqueeze(1) if crops else torch.zeros(0, 1, 28, 28)
    return GlyphPool(stack.float(), torch.full((len(crops),), NOT_A_DIGIT, dtype=torch.long))


def cached_pages(cache_dir: Path, photos: int, seed: int, workers: int = 1) -> GlyphPool:
    """mine_pages, kept in `cache_dir` keyed by its arguments and the bytes of the code that
    makes the photos and prepares them (a changed pipeline mines again)."""
    if photos <= 0:
        return mine_pages(0, seed)  # nothing to mine, nothing to keep
    return cached(
        cache_dir / "pages",
        ["pages", photos, seed],
        [Path(scenes.__file__), *PIPELINE_CODE, Path(__file__)],
        lambda: mine_pages(photos, seed, workers),
    )
