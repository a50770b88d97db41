"""Phones' own formats and sizes: HEIC/HEIF and AVIF uploads, their headers checked before any
decoding, and a 12-megapixel JPEG decoded at reduced scale (JPEG draft mode)."""

from __future__ import annotations

import random
import struct

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app import imaging
from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import ImageTooLarge, InvalidImage, UnsupportedFormat
from tests.imagegen import encode, paper_photo
from training.data import Split


@pytest.fixture(scope="module", autouse=True)
def _heif_encoder() -> None:
    imaging._register_heif()  # the tests encode HEIC with pillow-heif's saver, registered with it


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + b"\0\0\0\x08free"


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """`data` with its first image size property (ispe) replaced: the header lies."""
    at = data.index(b"ispe") + 8
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


@pytest.mark.parametrize(
    ("header", "fmt"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"heix", b"mif1"), "HEIF"),
        (_ftyp(b"mif1", b"heic", b"miaf"), "HEIF"),
        (_ftyp(b"msf1", b"hevc"), "HEIF"),
        (_ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (_ftyp(b"mif1", b"avif"), "AVIF"),
        (_ftyp(b"avis", b"msf1"), "AVIF"),
    ],
)
def test_sniff_format_reads_the_brands_of_the_ftyp_box(header: bytes, fmt: str) -> None:
    assert imaging.sniff_format(header) == fmt


@pytest.mark.parametrize("header", [_ftyp(b"isom", b"mp41"), _ftyp(b"qt  "), _ftyp(b"crx ")])
def test_other_iso_media_files_are_415(header: bytes) -> None:
    with pytest.raises(UnsupportedFormat, match="HEIC/HEIF or AVIF"):
        imaging.sniff_format(header)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_give_the_digit(client: TestClient, mnist_test: Split, fmt: str) -> None:
    rng = random.Random(3)
    for i in range(3):
        photo = encode(paper_photo(mnist_test.images[i], rng), fmt, quality=90)
        assert imaging.sniff_format(photo) == fmt
        response = client.post(
            "/predict",
            files={"image": ("photo", photo, f"image/{fmt.lower()}")},
            data={"number": "4"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == int(mnist_test.labels[i])


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_oversized_phone_format_header_is_refused_before_decoding(fmt: str) -> None:
    small = encode(Image.new("RGB", (64, 64), "white"), fmt)
    assert imaging.open_image(small, DEFAULT_MAX_IMAGE_PIXELS).size == (64, 64)
    # The coded image claims 8000x8000 pixels while the data holds 64x64: decoding it would
    # fail (InvalidImage), so ImageTooLarge shows that the header was refused first.
    with pytest.raises(ImageTooLarge, match="8000x8000"):
        imaging.prepare_image(_claiming(small, 8000, 8000), DEFAULT_MAX_IMAGE_PIXELS)


def test_heif_cropped_from_a_huge_coded_image_is_refused() -> None:
    """HEIF's size is the image after its crop (clap); what decoding costs is the coded image,
    which the item properties declare: a small crop of a huge image is refused."""
    cropped = encode(Image.new("RGB", (64, 48), "white"), "HEIF")  # coded 64x64, cropped
    assert imaging.open_image(cropped, DEFAULT_MAX_IMAGE_PIXELS).size == (64, 48)
    with pytest.raises(ImageTooLarge):
        imaging.prepare_image(_claiming(cropped, 6000, 6000), DEFAULT_MAX_IMAGE_PIXELS)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_truncated_phone_format_is_invalid(fmt: str) -> None:
    data = encode(Image.new("RGB", (64, 64), "white"), fmt)
    with pytest.raises(InvalidImage):
        imaging.prepare_image(data[: len(data) // 2], DEFAULT_MAX_IMAGE_PIXELS)


def test_twelve_megapixel_jpeg_is_decoded_at_reduced_scale() -> None:
    photo = Image.new("RGB", (4032, 3024), (225, 220, 210))
    ImageDraw.Draw(photo).rectangle((1900, 1000, 2100, 2000), fill=(30, 30, 40))  # a "1"
    data = encode(photo, "JPEG", quality=90)
    image, source_size = imaging._decode(
        data, DEFAULT_MAX_IMAGE_PIXELS, draft_side=imaging.DRAFT_SIDE
    )
    # The smallest DCT scale whose longer side is >= DRAFT_SIDE: an eighth of each side.
    assert imaging.DRAFT_SIDE <= 504
    assert source_size == (4032, 3024)
    assert image.size == (504, 378)
    prepared = imaging.prepare_image(data, DEFAULT_MAX_IMAGE_PIXELS)
    assert prepared.source_size == (4032, 3024)
    assert prepared.pixels.max() > 0.5


def test_small_jpeg_is_decoded_whole() -> None:
    data = encode(Image.new("RGB", (700, 500), "white"), "JPEG")
    image, _ = imaging._decode(data, DEFAULT_MAX_IMAGE_PIXELS, draft_side=imaging.DRAFT_SIDE)
    assert image.size == (700, 500)


def test_accepted_formats_are_named_in_the_errors() -> None:
    with pytest.raises(InvalidImage, match="HEIC/HEIF or AVIF"):
        imaging.sniff_format(b"just text")
    for fmt in ("HEIF", "AVIF"):
        assert fmt in imaging.ALLOWED_FORMATS
