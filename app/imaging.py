"""Bytes of an uploaded image -> the (1, 28, 28) float tensor the model reads, made like MNIST.

MNIST digits are white on black, cropped to their ink, scaled to fit 20x20 keeping the aspect
ratio, and placed in 28x28 with their centre of mass at the centre. A photo of a digit on paper
goes through the same steps after its polarity is detected and the paper's grey is removed, so
it reaches the model in the form the model was trained on. No FastAPI imports here.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from app import ink, metrics
from app.errors import (
    ImageTooLarge,
    ImageTooSmall,
    InternalError,
    InvalidImage,
    NoDigit,
    ServiceError,
    UnsupportedFormat,
)
from app.ink_params import PARAMS, InkParams

# Pillow's names for the formats we decode. HEIF is what iPhones save (HEIC), read by
# pillow-heif (libheif); AVIF is read by Pillow's own plugin (libavif, in its wheels).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "HEIF", "AVIF")
ACCEPTED = "PNG, JPEG, WebP, BMP, GIF, HEIC/HEIF or AVIF"  # the same list, as people name them

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (magic bytes at offset 0, Pillow format). WebP is RIFF....WEBP, checked apart.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
# Image formats we recognise but do not accept (answered 415 rather than "not an image").
_OTHER_IMAGE_SIGNATURES = (
    b"II*\x00",
    b"MM\x00*",  # TIFF
    b"\x00\x00\x01\x00",  # ICO
    b"8BPS",  # Photoshop
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
    b"%!PS",
    b"%PDF",
    b"qoif",
    b"P1",
    b"P2",
    b"P3",
    b"P4",
    b"P5",
    b"P6",
    b"<svg",
    b"<?xml",
)

SIZE = 28  # the model's input side
# Pixels on an image's shorter side below which it cannot hold a digit: people read digits drawn
# in 8x8 (a small font, a favicon), not in fewer. Refused before the image is decoded.
MIN_IMAGE_SIDE = 8
BOX = 20  # MNIST scales each digit to fit this box
CENTRE = 14.0  # where MNIST puts a digit's centre of mass (row, column)
# Ink fainter than this is cleared from a synthetic glyph's coverage (training/synthetic.py), as
# the service's old paper path cleared it from photos.
NOISE_FLOOR = 0.15
WORK_SIDE = ink.WORK_SIDE  # larger images are shrunk to this side before any per-pixel float work
DRAFT_SIDE = 480  # JPEGs larger than this are decoded at reduced scale, but not below it
# Grey level (0..1) above which the middle of a photo is paper, not a dark canvas: dark-mode
# drawing apps and boards sit far below it, a page in a hand's shadow above it.
PAPER_LEVEL = 0.35


@dataclass(frozen=True)
class PreparedImage:
    """What the model sees: (28, 28) float32 in [0, 1], white digit on black."""

    pixels: np.ndarray
    source_format: str
    source_size: tuple[int, int]
    inverted: bool

    @property
    def tensor(self) -> torch.Tensor:
        """The pixels as the model's (1, 28, 28) input."""
        return torch.from_numpy(self.pixels).unsqueeze(0)


def png_base64(pixels: np.ndarray) -> str:
    """A (28, 28) model input as a base64 PNG, to show a person what the model saw."""
    grey = (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# HEIF and AVIF files are ISO base media files: a first box `ftyp` whose size varies, a major
# brand, a minor version, then compatible brands. The brands say which codec the images use.
_AVIF_BRANDS = frozenset((b"avif", b"avis"))
_HEVC_BRANDS = frozenset((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"))
_HEIF_BRANDS = frozenset((b"mif1", b"msf1"))  # HEIF images with a codec named elsewhere
_FTYP_HEAD = struct.Struct(">I4s4s")  # box size, "ftyp", major brand


def _ftyp_format(data: bytes) -> str | None:
    """HEIF or AVIF from an ISO base media file's ftyp box; None if the file has none; raises
    UnsupportedFormat for other such files (videos, JPEG 2000, camera raws)."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    box_size, _, major = _FTYP_HEAD.unpack_from(data)
    end = min(len(data), max(box_size, 16), 4096)
    brands = {major} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & (_HEVC_BRANDS | _HEIF_BRANDS):
        return "HEIF"
    raise UnsupportedFormat(f"image format not accepted; send {ACCEPTED}", field="image")


_BOX_HEAD = struct.Struct(">I4s")
_ISPE = struct.Struct(">4xII")  # version and flags, width, height


def _boxes(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """The ISO boxes laid end to end in data[start:end]: type -> (content start, end)."""
    found: dict[bytes, tuple[int, int]] = {}
    while start + 8 <= end:
        size, kind = _BOX_HEAD.unpack_from(data, start)
        header = 8
        if size == 1 and start + 16 <= end:  # a 64-bit size follows the type
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:  # to the end of the file
            size = end - start
        if size < header:
            break
        found.setdefault(kind, (start + header, min(start + size, end)))
        start += size
    return found


def _largest_declared_image(data: bytes) -> tuple[int, int]:
    """The largest width x height that a HEIF/AVIF file's item properties declare (ispe: the
    coded image, the grid, the tiles, the thumbnails), (0, 0) if none is found. The decoder's
    own size is the image after its transformations: a crop (clap) can make a huge coded
    image look small, and the coded image is what decoding costs."""
    meta = _boxes(data, 0, len(data)).get(b"meta")
    if meta is None:
        return 0, 0
    iprp = _boxes(data, meta[0] + 4, meta[1]).get(b"iprp")  # meta is a full box: 4 more bytes
    ipco = _boxes(data, *iprp).get(b"ipco") if iprp else None
    if ipco is None:
        return 0, 0
    largest, start, end = (0, 0), *ipco
    while start + 8 <= end:  # the property boxes, several of each type
        size, kind = _BOX_HEAD.unpack_from(data, start)
        if size < 8:
            break
        if kind == b"ispe" and size >= 20 and start + 20 <= end:
            width, height = _ISPE.unpack_from(data, start + 8)
            if width * height > largest[0] * largest[1]:
                largest = (width, height)
        start += size
    return largest


def sniff_format(data: bytes) -> str:
    """The allowed format named by the file's first bytes, or raise before any decoder runs."""
    if not data:
        raise InvalidImage("the uploaded file is empty", field="image")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    from_ftyp = _ftyp_format(data)
    if from_ftyp is not None:
        return from_ftyp
    if any(data.startswith(magic) for magic in _OTHER_IMAGE_SIGNATURES):
        raise UnsupportedFormat(f"image format not accepted; send {ACCEPTED}", field="image")
    raise InvalidImage(f"the uploaded file is not an image (accepted: {ACCEPTED})", field="image")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode `data` with the one decoder its signature names, refusing huge images first."""
    return _decode(data, max_pixels, draft_side=0)[0]


# Pillow warns of a possible decompression bomb above Image.MAX_IMAGE_PIXELS: for the service it
# is an error, in every thread. Set once for the process rather than with catch_warnings around
# each decode, which swaps the process's filters and so is not thread-safe (the decoding pool
# and the model thread decode at the same time).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# What the decoders raise on a truncated or corrupt file, besides Pillow's decompression-bomb
# errors, and nothing more: anything else raised while decoding is a bug of ours, answered as an
# internal error and logged, not passed off as the caller's bad file. Pillow's plugins raise
# OSError (UnidentifiedImageError, "truncated", "broken data stream"), SyntaxError (a broken
# chunk or frame), ValueError, EOFError and struct.error (a header shorter than it says);
# pillow-heif raises ValueError; Pillow's AVIF plugin (libavif) raises RuntimeError, so that
# one format also has it (tests/app/test_imaging.py corrupts files of every format).
_CORRUPT: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_CORRUPT_BY_FORMAT: dict[str, tuple[type[Exception], ...]] = {"AVIF": (*_CORRUPT, RuntimeError)}


def _decode(data: bytes, max_pixels: int, draft_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image and its size as sent. With `draft_side`, a JPEG is decoded at the
    smallest DCT scale (1/2, 1/4 or 1/8) whose longer side stays at least `draft_side`: a
    12 MP photo costs a sixteenth of its pixels (bench/photos.py measures it). HEIF (HEVC) and
    AVIF (AV1) cannot decode at reduced scale; pillow-heif would use an embedded thumbnail of
    that size if there were one (phones embed smaller ones)."""
    fmt = sniff_format(data)
    if fmt in ("HEIF", "AVIF"):
        width, height = _largest_declared_image(data)
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels",
                field="image",
            )
        if fmt == "HEIF":
            _register_heif()
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels",
                field="image",
            )
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ImageTooSmall(
                f"image is {width}x{height} pixels; a digit needs at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}",
                field="image",
            )
        image.seek(0)  # first frame of an animation
        if draft_side and max(width, height) > draft_side:
            scale = draft_side / max(width, height)
            # Grey straight from the DCT (the pipeline reads luminance only): no colour
            # conversion, no chroma upsampling.
            mode = "L" if image.mode in ("RGB", "L") else image.mode
            image.draft(mode, (max(1, int(width * scale)), max(1, int(height * scale))))
        image.load()
    except (ImageTooLarge, UnsupportedFormat):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("image dimensions are too large to decode", field="image") from exc
    except _CORRUPT_BY_FORMAT.get(fmt, _CORRUPT) as exc:
        raise InvalidImage(
            f"cannot decode the {fmt} image: it is truncated or corrupt", field="image"
        ) from exc
    return image, (width, height)


_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow to open HEIF (pillow-heif), the first time one is uploaded: nothing is
    imported or registered at import time. Registering twice (two threads) is harmless."""
    global _heif_registered
    if not _heif_registered:
        import pillow_heif

        # Depth maps and auxiliary images (an iPhone's portrait matte) are never read here.
        pillow_heif.register_heif_opener(depth_images=False, aux_images=False)
        _heif_registered = True


def _shrink(image: Image.Image) -> Image.Image:
    """`image` with its longer side cut to WORK_SIDE (box filter, aspect kept), or as it is.

    The digit ends up 20 pixels tall whatever the photo's size, so nothing is lost; the float
    arrays below then cost a few MB instead of 4 bytes per pixel of a 25 Mpx upload, several
    times over (a 100 kB PNG of 5000x5000 pixels once took 750 MB at its peak).
    """
    width, height = image.size
    if max(width, height) <= WORK_SIDE:
        return image
    scale = WORK_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def _luminance_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels (H, W) float32 in [0, 1] and alpha (H, W) in [0, 1] when there is any, with
    H and W at most WORK_SIDE."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(_shrink(image.convert("I")), dtype=np.float32) / 65535.0
        return np.clip(grey, 0.0, 1.0), None
    if image.mode == "F":
        return np.clip(np.asarray(_shrink(image), dtype=np.float32) / 255.0, 0.0, 1.0), None
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if image.mode == "CMYK":
        image = image.convert("RGB")
    if has_alpha:
        rgba = _shrink(image if image.mode == "RGBA" else image.convert("RGBA"))
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        return grey, alpha
    grey_image = _shrink(image if image.mode == "L" else image.convert("L"))
    return np.asarray(grey_image, dtype=np.float32) / 255.0, None


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the background that contrasts with the ink.

    Dark strokes on a transparent canvas go onto white paper, light strokes onto black.
    """
    opaque = alpha > 0.5
    ink_is_dark = bool(opaque.any()) and float(grey[opaque].mean()) < 0.5
    background = 1.0 if ink_is_dark else 0.0
    flat: np.ndarray = grey * alpha + background * (1.0 - alpha)
    return flat


def _to_white_on_black(grey: np.ndarray, params: InkParams = PARAMS) -> tuple[np.ndarray, bool]:
    """White ink on black, as MNIST has it; returns (image, inverted).

    An image whose border is mostly exact black (MNIST itself, a clean drawing) is left as it
    is, and so is one mostly exact white once inverted (a drawing on a white pad). Anything
    else is a photo: its ink is found by app.ink (lighting flattened, ruling lines, specks and
    page edges removed, the digit chosen among what is left), which raises NoDigit when it
    finds none. Dark ink on light paper is the usual case; light ink on a dark canvas (a
    drawing app's dark mode, chalk) is inverted first.
    """
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    half = border.size / 2
    inverted = bool(np.count_nonzero(border > 0.5) > half)  # the border's median is light
    flipped = 1.0 - border if inverted else border
    if np.count_nonzero(flipped) < half:  # median 0: a synthetic background, nothing to remove
        return (1.0 - grey if inverted else grey), inverted
    # A photo: which way round the ink is. A border mostly light is paper (in a close crop a
    # bold marker digit fills the middle with ink). Otherwise the middle of the picture says,
    # where the digit's paper is (the border may be a dark desk around a white page): paper,
    # even in a shadow, is lighter than a dark canvas.
    height, width = grey.shape
    middle = grey[height // 4 : height - height // 4, width // 4 : width - width // 4]
    inverted = inverted or float(np.median(middle)) > PAPER_LEVEL
    return ink.digit_ink(grey if inverted else 1.0 - grey, params).pixels, inverted


def frame_like_mnist(grey: np.ndarray) -> np.ndarray:
    """Crop to ink, fit in 20x20 keeping the aspect ratio, centre by centre of mass in 28x28."""
    ink = grey > 0
    if not ink.any():
        return np.zeros((SIZE, SIZE), dtype=np.float32)  # a blank page: the model says what it says
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    if scale != 1.0:
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = Image.fromarray(crop, mode="F").resize((new_w, new_h), Image.Resampling.LANCZOS)
        crop = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
        h, w = crop.shape
    total = float(crop.sum())
    if total > 0:
        cy = float((crop.sum(axis=1) * np.arange(h)).sum()) / total
        cx = float((crop.sum(axis=0) * np.arange(w)).sum()) / total
    else:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    # MNIST's centres of mass sit at (14.0, 14.0) on average (measured on its test set); shift
    # by whole pixels as MNIST did, keeping the box inside the frame.
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - h))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - w))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + h, left : left + w] = crop
    return out


def prepare_image(data: bytes, max_pixels: int, params: InkParams = PARAMS) -> PreparedImage:
    """The whole path from upload bytes to the model's input; raises our 4xx errors. `params`
    are the photo pipeline's tuned numbers (app/ink_params.py): the service uses PARAMS."""
    image, source_size = _decode(data, max_pixels, draft_side=DRAFT_SIDE)
    source_format = str(image.format)
    image = _upright(image)
    grey, alpha = _luminance_and_alpha(image)
    if alpha is not None:
        grey = _composite(grey, alpha)
    grey, inverted = _to_white_on_black(grey, params)
    pixels = frame_like_mnist(grey)
    if not pixels.any():
        raise _blank()
    return PreparedImage(pixels, source_format, source_size, inverted)


# What Pillow's EXIF reader raises on corrupt metadata (a TIFF header that is not one, a tag of
# the wrong type): measured by corrupting the EXIF of files of every format that carries it.
_CORRUPT_EXIF = (SyntaxError, TypeError, ValueError, OSError, struct.error)


def _upright(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation says; as it is when the EXIF is corrupt: the
    pixels decoded, and a photo read sideways is still better than a refusal."""
    try:
        return ImageOps.exif_transpose(image) or image
    except _CORRUPT_EXIF:
        return image


def _blank() -> NoDigit:
    return NoDigit(
        "I don't see a digit in this image: it looks blank", field="image", rule="blank_frame"
    )


# Small PNGs (MNIST's own 28x28 digits, a client's thumbnails) are decoded inside the model's
# batch, on its thread; anything larger goes through the preprocessing pool first, so that one
# big photo never holds up a batch. A PNG says its size in its first 24 bytes (IHDR), so a
# small file that would inflate to a huge image never takes the batch's path.
LIGHT_MAX_PIXELS = 64 * 64


def is_light(data: bytes) -> bool:
    """Whether `data` is a PNG of at most LIGHT_MAX_PIXELS pixels, by its header."""
    if data[:16] != _PNG_START:
        return False
    width, height = _WIDTH_HEIGHT.unpack_from(data, 16)
    return bool(width * height <= LIGHT_MAX_PIXELS)


# A PNG's first 16 bytes: the signature, then its first chunk's length and type, always IHDR (13).
_PNG_START = _PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR"
_WIDTH_HEIGHT = struct.Struct(">II")


def prepare_batch(blobs: list[bytes], max_pixels: int) -> list[np.ndarray | ServiceError]:
    """prepare_image for many uploads: each one's (28, 28) pixels, or its error.

    The same answers as prepare_image, pixel for pixel (tests/app/test_imaging.py checks all of
    MNIST's test set), but faster for what most clients send, a plain 28x28 grey PNG: those
    already in MNIST's form (white on black, fitted to 20 pixels, centred by mass) are
    recognised for the whole batch at once and passed through instead of being cropped and
    placed one by one.
    """
    started = time.perf_counter()
    out: list[np.ndarray | ServiceError] = []
    candidates: list[tuple[int, np.ndarray]] = []
    for i, blob in enumerate(blobs):
        grey = _decode_plain_grey_png(blob)
        if grey is not None:
            out.append(_EMPTY)  # set below
            candidates.append((i, grey))
            continue
        out.append(_isolated(_pixels_of, blob, max_pixels))
    if candidates:
        stack = np.array([grey for _, grey in candidates], np.uint8)  # (N, 28, 28), cf. np.stack
        floats = stack.astype(np.float32) / 255.0  # as _luminance_and_alpha makes them
        for (i, _), ready, pixels in zip(
            candidates, _already_like_mnist(stack), floats, strict=True
        ):
            if ready:
                out[i] = pixels if pixels.any() else _blank()
                continue
            out[i] = _isolated(_framed, pixels)
    metrics.PREPROCESS_SECONDS.observe(time.perf_counter() - started)
    return out


def _pixels_of(data: bytes, max_pixels: int) -> np.ndarray:
    return prepare_image(data, max_pixels).pixels


def _framed(pixels: np.ndarray) -> np.ndarray:
    framed = frame_like_mnist(_to_white_on_black(pixels)[0])
    if not framed.any():
        raise _blank()
    return framed


def _isolated(prepare: Callable[..., np.ndarray], *args: Any) -> np.ndarray | ServiceError:
    """One image's pixels, or its error in their place: ours as raised (a 4xx), and any other
    exception, a bug of ours, as an InternalError of this image alone. Whatever one upload
    does to the pipeline, the other images of its batch are prepared and answered."""
    try:
        return prepare(*args)
    except ServiceError as exc:
        return exc
    except Exception as exc:
        return InternalError("prepare", exc)


_EMPTY = np.zeros(0, np.float32)
# The first 29 bytes of a 28x28, 8-bit, grey (colour type 0), non-interlaced PNG: the signature,
# then IHDR's length, type, width, height, depth, colour type, compression, filter, interlace.
_PLAIN_START = _PNG_START + struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0)
# Chunks that could give Pillow's decoding something more: transparency, an orientation, XMP.
# One search for all five names (a fifth of the time of five `in` tests).
_NOT_PLAIN_CHUNKS = re.compile(b"tRNS|eXIf|tEXt|zTXt|iTXt")


def _decode_plain_grey_png(data: bytes) -> np.ndarray | None:
    """(28, 28) uint8 pixels of the plainest PNG, which Pillow reads as mode "L" with nothing
    else to apply (the header and chunks say so); None for anything else, or if it does not
    decode: then prepare_image decides, with its error message. Pillow decodes it, as every
    other upload: one decoder of untrusted bytes to keep patched (libspng, used here before,
    was about 15 us per image faster)."""
    if data[:29] != _PLAIN_START:
        return None
    idat = _only_idat(data)
    if idat is not None:
        return _decode_idat(data, idat)
    if _NOT_PLAIN_CHUNKS.search(data):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            # tobytes() decodes; np.asarray(image) would cost as much again (its array
            # interface copies the pixels through Python) for a 28x28 image.
            pixels: np.ndarray = np.frombuffer(image.tobytes(), np.uint8).reshape(SIZE, SIZE)
    except _CORRUPT:
        return None  # corrupt: prepare_image names the problem
    return pixels


def _decode_idat(data: bytes, idat: bytes) -> np.ndarray | None:
    """The pixels of a plain PNG that is nothing but IHDR, one IDAT chunk (whose data is `idat`)
    and IEND, decoded by the decoder Pillow's PNG plugin hands IDAT to ("zip": inflate, then
    undo the row filters), without the plugin's chunk reading in Python, which cost three times
    the decoding for a 28x28 image. As the plugin does, IHDR's CRC is checked and IDAT's and
    IEND's are not (the same answers on corrupted files: tests/app/test_imaging.py)."""
    (crc,) = _LENGTH.unpack_from(data, 29)
    if zlib.crc32(data[12:29]) != crc:
        return None  # Pillow refuses it: prepare_image names the problem
    try:
        image = Image.frombytes("L", (SIZE, SIZE), idat, "zip", "L")
    except _CORRUPT:
        return None
    return np.frombuffer(image.tobytes(), np.uint8).reshape(SIZE, SIZE)


def _only_idat(data: bytes) -> bytes | None:
    """The IDAT chunk's data if IHDR (which ends at byte 33) is followed by one IDAT chunk and
    IEND, and nothing after: what Pillow and most encoders write for a plain image; else None.
    Cheaper to tell than to search the whole file for the chunks that could change the
    decoding."""
    if len(data) < 57:  # IHDR, an empty IDAT chunk, IEND
        return None
    (length,) = _LENGTH.unpack_from(data, 33)
    iend = 45 + length  # where IEND starts if it follows the IDAT chunk
    ends_with_iend = len(data) == iend + 12 and data[iend + 4 : iend + 8] == b"IEND"
    if data[37:41] != b"IDAT" or not ends_with_iend:
        return None
    return data[41 : iend - 4]


_LENGTH = struct.Struct(">I")
_INDEX = np.arange(SIZE, dtype=np.float64)  # row/column numbers, for the moments below


def _already_like_mnist(stack: np.ndarray) -> np.ndarray:
    """Which of these (N, 28, 28) uint8 grey images prepare_image would return unchanged.

    Ink off the border (so it is neither inverted nor has paper removed), a bounding box whose
    longer side is 20 pixels (so it is not resized), and a centre of mass that, rounded as
    frame_like_mnist rounds it, puts the box where it already is; or no ink at all. The centre
    of mass is exact here (integer moments); one within 1e-4 of a rounding tie is left to the
    slow path, whose float32 sums could round the other way.
    """
    rows = stack.sum(axis=2, dtype=np.int32)  # (N, 28) ink per row, at most 28 * 255
    cols = stack.sum(axis=1, dtype=np.int32)
    ink_rows, ink_cols = rows > 0, cols > 0
    top, left = ink_rows.argmax(axis=1), ink_cols.argmax(axis=1)
    bottom = SIZE - ink_rows[:, ::-1].argmax(axis=1)  # one past the last row with ink
    right = SIZE - ink_cols[:, ::-1].argmax(axis=1)
    inside = (top > 0) & (left > 0) & (bottom < SIZE) & (right < SIZE)
    height, width = bottom - top, right - left
    mass = np.maximum(rows.sum(axis=1), 1)
    shift_y = CENTRE - (rows @ _INDEX / mass - top)  # where frame_like_mnist puts the box
    shift_x = CENTRE - (cols @ _INDEX / mass - left)
    clear = (np.abs(shift_y % 1 - 0.5) > 1e-4) & (np.abs(shift_x % 1 - 0.5) > 1e-4)
    placed_top = np.clip(np.floor(shift_y + 0.5), 0, SIZE - height)
    placed_left = np.clip(np.floor(shift_x + 0.5), 0, SIZE - width)
    in_place = clear & (placed_top == top) & (placed_left == left)
    blank = ~ink_rows.any(axis=1)
    ready: np.ndarray = blank | (inside & (np.maximum(height, width) == BOX) & in_place)
    return ready
