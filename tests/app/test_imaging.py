"""bytes -> 28x28 like MNIST: MNIST itself passes unchanged; photos are inverted and centred."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from app.errors import ImageTooLarge, InvalidImage, UnsupportedFormat
from app.imaging import prepare_image, sniff_format
from tests.imagegen import encode, mnist_png, paper_photo
from training.data import Split


def test_mnist_png_comes_out_unchanged(mnist_test: Split) -> None:
    """Raw MNIST images are already cropped, 20x20-boxed and centred: nearly all pass bit-exact,
    and the rest move by one pixel at most."""
    identical = 0
    for image in mnist_test.images[:2000]:
        prepared = prepare_image(mnist_png(image), 25_000_000)
        assert not prepared.inverted
        if torch.equal(prepared.tensor, image):
            identical += 1
        else:
            shifted = [
                torch.roll(image, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            ]
            assert any(torch.equal(prepared.tensor, s) for s in shifted)
    assert identical / 2000 >= 0.95


def test_photo_is_inverted_cropped_and_centred(mnist_test: Split) -> None:
    photo = paper_photo(mnist_test.images[0], random.Random(1))
    prepared = prepare_image(encode(photo, "JPEG", quality=90), 25_000_000)
    assert prepared.inverted
    pixels = prepared.tensor[0]
    assert pixels.shape == (28, 28)
    ink_rows = torch.nonzero(pixels.sum(1) > 0)
    ink_cols = torch.nonzero(pixels.sum(0) > 0)
    assert max(int(ink_rows[-1] - ink_rows[0]), int(ink_cols[-1] - ink_cols[0])) + 1 <= 20
    mass = pixels.sum()
    cy = float((pixels.sum(1) * torch.arange(28)).sum() / mass)
    cx = float((pixels.sum(0) * torch.arange(28)).sum() / mass)
    assert abs(cy - 14) <= 1
    assert abs(cx - 14) <= 1


def test_blank_image_gives_an_empty_input() -> None:
    prepared = prepare_image(encode(Image.new("L", (50, 50), 255)), 25_000_000)
    assert float(prepared.tensor.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"GIF89a", InvalidImage),
        (b"II*\x00rest", UnsupportedFormat),
        (b"%PDF-1.7", UnsupportedFormat),
        (b"<svg xmlns=...>", UnsupportedFormat),
        (b"just text", InvalidImage),
    ],
)
def test_signatures_are_checked_before_any_decoder(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        prepare_image(data, 25_000_000)


def test_pixel_cap_is_applied_from_the_header() -> None:
    with pytest.raises(ImageTooLarge):
        prepare_image(encode(Image.new("L", (300, 300))), 200 * 200)


def test_sniff_format_names_each_allowed_format() -> None:
    image = Image.new("RGB", (8, 8))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        assert sniff_format(encode(image, fmt)) == fmt
