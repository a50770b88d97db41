"""bytes -> 28x28 like MNIST: MNIST itself passes unchanged; photos are inverted and centred."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import ImageTooLarge, InvalidImage, NoDigit, UnsupportedFormat
from app.imaging import (
    _already_like_mnist,
    _decode_plain_grey_png,
    is_light,
    prepare_batch,
    prepare_image,
    sniff_format,
)
from tests.imagegen import encode, mnist_png, paper_photo
from training.data import Split


def test_mnist_png_comes_out_unchanged(mnist_test: Split) -> None:
    """Raw MNIST images are already cropped, 20x20-boxed and centred: nearly all pass bit-exact,
    and the rest move by one pixel at most."""
    identical = 0
    for image in mnist_test.images[:2000]:
        prepared = prepare_image(mnist_png(image), DEFAULT_MAX_IMAGE_PIXELS)
        assert not prepared.inverted
        if torch.equal(prepared.tensor, image):
            identical += 1
        else:
            shifted = [
                torch.roll(image, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            ]
            assert any(torch.equal(prepared.tensor, s) for s in shifted)
    assert identical / 2000 >= 0.95


def test_batch_path_gives_prepare_image_answers_pixel_for_pixel(mnist_test: Split) -> None:
    """prepare_batch passes MNIST-like images through by a vectorised check; whatever it decides,
    every image of MNIST's test set, and images it must not pass through, come out as
    prepare_image makes them."""
    rng = random.Random(3)
    uploads = [mnist_png(image) for image in mnist_test.images]
    digit = (mnist_test.images[7, 0] * 255).round().byte().numpy()
    uploads += [
        encode(Image.fromarray(255 - digit)),  # inverted: dark ink on white
        encode(Image.fromarray(np.roll(digit, (3, -4), (0, 1)))),  # off centre
        encode(Image.fromarray(digit[2:26, 2:26]).resize((28, 28))),  # larger than 20 pixels
        encode(Image.fromarray(np.zeros((28, 28), np.uint8))),  # blank
        encode(Image.fromarray(digit).convert("RGB")),  # colour: the general path
        encode(Image.fromarray(digit), "JPEG", quality=90),
        encode(paper_photo(mnist_test.images[3], rng), "JPEG", quality=90),
        # plain 28x28 grey PNGs but for a chunk that changes what Pillow makes of them
        encode(Image.fromarray(digit), transparency=0),  # tRNS: black is see-through
        encode(Image.fromarray(digit), exif=_orientation(3)),  # eXIf: upside down
        encode(Image.fromarray(digit), pnginfo=_text_chunk()),  # tEXt
        b"not an image",
    ]
    batched = [
        x
        for at in range(0, len(uploads), 64)
        for x in prepare_batch(uploads[at : at + 64], DEFAULT_MAX_IMAGE_PIXELS)
    ]
    assert isinstance(batched[-1], InvalidImage)
    for upload, pixels in zip(uploads[:-1], batched[:-1], strict=True):
        if isinstance(pixels, NoDigit):  # the blank one: the same answer from both paths
            with pytest.raises(NoDigit, match=re.escape(pixels.message)):
                prepare_image(upload, DEFAULT_MAX_IMAGE_PIXELS)
            continue
        assert isinstance(pixels, np.ndarray)
        assert np.array_equal(pixels, prepare_image(upload, DEFAULT_MAX_IMAGE_PIXELS).pixels)
    assert sum(isinstance(x, NoDigit) for x in batched) == 1


def _corrupted(png: bytes, rng: random.Random) -> bytes:
    """A plain PNG with a few bytes changed, anywhere from IHDR's CRC to the end."""
    data = bytearray(png)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(29, len(data))] = rng.randrange(256)
    return bytes(data)


def test_corrupted_plain_pngs_get_prepare_image_answers(mnist_test: Split) -> None:
    """The fast decoding of a plain PNG (Pillow's zip decoder on its one IDAT chunk) answers
    exactly as Pillow's PNG plugin does through prepare_image: the same pixels, or the same
    error, for files corrupted in their CRCs, lengths, compressed data and row filters."""
    rng = random.Random(5)
    pngs = [mnist_png(image) for image in mnist_test.images[:20]]
    uploads = [_corrupted(rng.choice(pngs), rng) for _ in range(400)]
    uploads += [png[:-20] for png in pngs[:5]]  # truncated
    batched = prepare_batch(uploads, DEFAULT_MAX_IMAGE_PIXELS)
    outcomes = set()
    for upload, got in zip(uploads, batched, strict=True):
        try:
            expected: np.ndarray | Exception = prepare_image(
                upload, DEFAULT_MAX_IMAGE_PIXELS
            ).pixels
        except (InvalidImage, NoDigit) as exc:
            expected = exc
        if isinstance(expected, np.ndarray):
            assert isinstance(got, np.ndarray)
            assert np.array_equal(got, expected)
        else:
            assert isinstance(got, type(expected))
            assert got.message == expected.message  # type: ignore[attr-defined]
        outcomes.add(type(expected).__name__)
    assert outcomes >= {"ndarray", "InvalidImage"}  # both kinds were exercised


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def _text_chunk() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a digit")
    return info


def test_most_of_mnist_takes_the_fast_path(mnist_test: Split) -> None:
    """Guards the speed the test above cannot see: libspng decodes MNIST-style PNGs and the
    vectorised check passes nearly all of them through."""
    uploads = [mnist_png(image) for image in mnist_test.images[:1000]]
    decoded = [_decode_plain_grey_png(upload) for upload in uploads]
    assert all(grey is not None for grey in decoded)
    assert _already_like_mnist(np.stack(decoded)).mean() > 0.98  # type: ignore[arg-type]


def test_only_small_pngs_are_light() -> None:
    assert is_light(encode(Image.new("L", (28, 28))))
    assert is_light(encode(Image.new("RGB", (64, 64))))
    assert not is_light(encode(Image.new("L", (65, 64))))
    assert not is_light(
        encode(Image.new("L", (8000, 8000)), optimize=True)
    )  # small file, huge image
    assert not is_light(encode(Image.new("L", (28, 28)), "JPEG"))
    assert not is_light(b"\x89PNG\r\n\x1a\n")


def test_photo_is_inverted_cropped_and_centred(mnist_test: Split) -> None:
    photo = paper_photo(mnist_test.images[0], random.Random(1))
    prepared = prepare_image(encode(photo, "JPEG", quality=90), DEFAULT_MAX_IMAGE_PIXELS)
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


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 50), 255),  # a white drawing pad
        Image.new("L", (28, 28), 0),  # a black one
        Image.new("RGB", (640, 480), (214, 208, 190)),  # paper
    ],
)
def test_blank_image_is_no_digit(image: Image.Image) -> None:
    with pytest.raises(NoDigit, match="looks blank"):
        prepare_image(encode(image), DEFAULT_MAX_IMAGE_PIXELS)


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
        prepare_image(data, DEFAULT_MAX_IMAGE_PIXELS)


def test_pixel_cap_is_applied_from_the_header() -> None:
    with pytest.raises(ImageTooLarge):
        prepare_image(encode(Image.new("L", (300, 300))), 200 * 200)


def test_sniff_format_names_each_allowed_format() -> None:
    image = Image.new("RGB", (8, 8))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        assert sniff_format(encode(image, fmt)) == fmt
