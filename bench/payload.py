"""The request bodies the load generator sends: one real MNIST digit as a PNG, in multipart form.

The digit comes from the MNIST test set when its IDX file is on disk (the first test image, a 7),
otherwise it is drawn with Pillow; the JSON results record which.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

MNIST_TEST_IMAGES = "MNIST/raw/t10k-images-idx3-ubyte.gz"
BOUNDARY = "----digitsumbench7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
SIDE = 28


@dataclass(frozen=True)
class Digit:
    """A 28x28 white-on-black PNG and where it came from."""

    png: bytes
    source: str


def mnist_test_digit(data_dirs: list[Path], index: int = 0) -> Digit | None:
    """Image `index` of the MNIST test set as PNG, from the first data dir that holds the file."""
    for data_dir in data_dirs:
        path = data_dir / MNIST_TEST_IMAGES
        if not path.is_file():
            continue
        raw = gzip.decompress(path.read_bytes())
        # IDX header: magic, count, rows, cols (4 big-endian int32 each), then uint8 pixels.
        offset = 16 + index * SIDE * SIDE
        pixels = raw[offset : offset + SIDE * SIDE]
        image = Image.frombytes("L", (SIDE, SIDE), pixels)
        return Digit(encode_png(image), f"{path} [{index}]")
    return None


def drawn_digit() -> Digit:
    """A 7 drawn with Pillow, white on black like MNIST, for machines without the dataset."""
    image = Image.new("L", (SIDE, SIDE), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(7, 7), (21, 7), (12, 23)], fill=255, width=3)
    return Digit(encode_png(image), "drawn with Pillow")


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# Where the MNIST test file is looked for, relative to the repository root.
DEFAULT_DATA_DIRS = [Path("tests/data"), Path("data"), Path("../shared/data")]


def load_digit(data_dirs: list[Path]) -> Digit:
    return mnist_test_digit(data_dirs) or drawn_digit()


def _file_part(field: str, png: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="digit.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + png + b"\r\n"


def _field_part(field: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'
    ).encode()


def single_body(png: bytes, number: int = 5) -> bytes:
    """POST /predict: file field `image` and integer field `number`, as a browser sends them."""
    return (
        _file_part("image", png)
        + _field_part("number", str(number))
        + f"--{BOUNDARY}--\r\n".encode()
    )


def batch_body(png: bytes, count: int) -> bytes:
    """POST /predict/batch: `count` repeated `images` files, then `count` repeated `numbers`."""
    parts = [_file_part("images", png) for _ in range(count)]
    parts += [_field_part("numbers", str(i % 10)) for i in range(count)]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
