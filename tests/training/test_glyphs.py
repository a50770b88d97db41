"""Glyph sources: every digit of every source renders, deterministically, split by source."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_heldout_fonts
from training import glyphs


@pytest.mark.parametrize("split", glyphs.SPLITS)
def test_every_digit_of_every_source_renders_ink_in_range(split: str) -> None:
    if split == "heldout":
        require_heldout_fonts()
    rng = np.random.default_rng(0)
    for source in glyphs.sources(split):
        assert source.split == split
        assert source.family in ("pen", "font")
        for digit in range(10):
            for size in (64, 28):
                ink = glyphs.render_digit(source, digit, rng, size=size)
                assert ink.shape == (size, size), (source, digit)
                assert ink.dtype == np.float32
                assert ink.min() >= 0.0
                assert ink.max() <= 1.0
                assert ink.max() > 0.5, (source.name, digit)  # real ink, not a faint smear
                assert (ink > 0.5).sum() >= 0.003 * size * size, (source.name, digit)
                rows = np.flatnonzero(ink.max(axis=1) > 0.3)
                # The glyph fills a sizeable part of the height, not a speck, not the frame.
                assert 0.3 * size <= rows[-1] - rows[0] + 1 <= size, (source.name, digit)


def test_render_is_deterministic_for_a_seed() -> None:
    require_heldout_fonts()
    for split in glyphs.SPLITS:
        for source in glyphs.sources(split)[::3]:
            first = glyphs.render_digit(source, 7, np.random.default_rng(42))
            again = glyphs.render_digit(source, 7, np.random.default_rng(42))
            other = glyphs.render_digit(source, 7, np.random.default_rng(43))
            np.testing.assert_array_equal(first, again)
            assert not np.array_equal(first, other)


def test_train_and_heldout_sources_are_disjoint() -> None:
    require_heldout_fonts()
    train = {s.name for s in glyphs.sources("train")}
    heldout = {s.name for s in glyphs.sources("heldout")}
    assert not train & heldout
    for names in (train, heldout):
        assert any(n.startswith("pen:") for n in names)
        assert any(n.startswith("font:") for n in names)
    # The project's independent check uses the Hershey fonts: none of ours may be one.
    assert not any("hershey" in n.lower() for n in train | heldout)


@pytest.mark.parametrize("split", glyphs.SPLITS)
@pytest.mark.parametrize("kind", glyphs.NEGATIVE_KINDS)
def test_negatives_render(split: str, kind: str) -> None:
    if split == "heldout":
        require_heldout_fonts()
    rng = np.random.default_rng(1)
    for _ in range(40):
        ink = glyphs.render_negative(kind, split, rng)
        assert ink.shape == (64, 64)
        assert ink.dtype == np.float32
        assert ink.min() >= 0.0
        assert ink.max() <= 1.0
        assert ink.max() > 0.3


def test_unknown_split_and_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        glyphs.sources("test")
    with pytest.raises(ValueError, match="kind"):
        glyphs.render_negative("digit", "train", np.random.default_rng(0))


def test_missing_heldout_fonts_name_the_apt_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glyphs, "FONT_ROOT", glyphs.Path("/nonexistent"))
    glyphs._font_files.cache_clear()
    try:
        with pytest.raises(glyphs.GlyphSourceMissing, match="apt-get install -y fonts-"):
            glyphs.sources("heldout")
    finally:
        glyphs._font_files.cache_clear()


def test_mouse_drawings_render_every_digit_on_the_pad_deterministically() -> None:
    from training.synthetic import through_the_page

    for digit in range(10):
        pad = glyphs.render_drawing(digit, np.random.default_rng(digit))
        assert pad.shape == (glyphs.PAD_SIDE, glyphs.PAD_SIDE)
        assert pad.dtype == np.float32
        assert pad.min() >= 0.0
        assert pad.max() <= 1.0
        assert (pad > 0.5).sum() > 100, digit  # strokes a brush wide, not a speck
        again = glyphs.render_drawing(digit, np.random.default_rng(digit))
        np.testing.assert_array_equal(pad, again)
        pixels = through_the_page(pad)  # the pad's PNG through the service's pipeline
        assert pixels is not None, digit
        assert pixels.shape == (28, 28)
    negative = glyphs.render_drawn_negative(np.random.default_rng(0))
    assert negative.shape == (glyphs.PAD_SIDE, glyphs.PAD_SIDE)
    assert negative.max() > 0.5


def test_drawn_ones_have_flags_of_many_lengths_and_angles() -> None:
    rng = np.random.default_rng(0)
    flags = [glyphs._flagged_one(rng) for _ in range(200)]
    starts = np.array([f.points[0] for f in flags])  # where the flag (or lead-in) begins
    lengths = np.hypot(starts[:, 0] - 0.55, starts[:, 1])
    assert lengths.min() < 0.15
    assert lengths.max() > 0.55
    assert 0.2 < np.mean([len(f.starts) == 2 for f in flags]) < 0.5  # some with a base
