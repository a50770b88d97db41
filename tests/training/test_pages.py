"""Page negatives: blank pages through the service's pipeline, mined the same way every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app import imaging
from app.errors import NoDigit
from training import pages, scenes, synthetic
from training.synthetic import NOT_A_DIGIT

# Seed 1008's first 20 blank photos: most are refused by the pipeline, and two (the third, on
# squared paper, and the eighteenth, at an angle on a desk) reach the model.
SEED, PHOTOS = 1008, 20


def test_a_page_crop_is_what_the_service_would_give_the_model() -> None:
    crops = {i: pages.page_crop(SEED, i) for i in range(PHOTOS)}
    kept = {i: c for i, c in crops.items() if c is not None}
    assert kept, "no blank photo of this seed reaches the model; pick another seed"
    assert len(kept) < PHOTOS  # most blank pages are refused before the model
    for crop in kept.values():
        assert crop.shape == (28, 28)
        assert crop.dtype == np.float32
        assert crop.any()
    # A photo the pipeline refuses is one the service answers no_digit before the model.
    refused = next(i for i, c in crops.items() if c is None)
    rng = np.random.default_rng([SEED, pages.STREAM, refused])
    scene = scenes.SCENES[refused % len(scenes.SCENES)]
    photo = scenes.photograph(np.zeros((96, 96), np.float32), scene, rng)
    with pytest.raises(NoDigit):
        imaging.prepare_image(photo.data, max_pixels=25_000_000)


def test_mining_is_the_same_with_one_or_two_workers_and_labels_every_crop_a_non_digit() -> None:
    one = pages.mine_pages(PHOTOS, SEED, workers=1)
    two = pages.mine_pages(PHOTOS, SEED, workers=2)
    assert len(one) >= 1
    assert one.images.shape == (len(one), 1, 28, 28)
    assert (one.labels == NOT_A_DIGIT).all()
    assert np.array_equal(one.images.numpy(), two.images.numpy())


def test_the_mined_pool_is_cached_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pages.cached_pages(tmp_path, PHOTOS, SEED)
    assert list(tmp_path.glob("pages-*.pt"))

    def mine_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("mined again instead of reading the cache")

    monkeypatch.setattr(pages, "mine_pages", mine_again)
    again = pages.cached_pages(tmp_path, PHOTOS, SEED)
    assert np.array_equal(first.images.numpy(), again.images.numpy())
    # Another seed is another pool: not read from this one's file.
    with pytest.raises(AssertionError, match="mined again"):
        pages.cached_pages(tmp_path, PHOTOS, SEED + 1)


@pytest.mark.parametrize("module", ["imaging", "ink", "ink_params"])
def test_the_caches_of_what_went_through_the_pipeline_are_keyed_by_its_code(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page negatives and mouse drawings are what the service's pipeline made of them: a changed
    rule or tuned number (app/ink.py, app/ink_params.py, app/imaging.py) must make them again,
    not read a pool it would no longer make."""
    keyed: list[list[Path]] = []

    def record(stem: Path, args: list[object], code: list[Path], make: object) -> None:
        keyed.append(code)

    monkeypatch.setattr(pages, "cached", record)
    monkeypatch.setattr(synthetic, "cached", record)
    pages.cached_pages(Path("unused"), PHOTOS, SEED)
    synthetic.cached_pool(Path("unused"), "train", 10, 10, SEED, drawings=10)
    synthetic.cached_pool(Path("unused"), "train", 10, 10, SEED)
    with_pipeline, drawings, glyphs_only = ({p.name for p in code} for code in keyed)
    assert f"{module}.py" in with_pipeline
    assert f"{module}.py" in drawings
    assert f"{module}.py" not in glyphs_only  # fonts alone: no pipeline, the key stays as it was
