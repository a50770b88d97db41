"""Turn MNIST arrays into the files people upload: PNGs, and photos of ink on paper."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter


def mnist_pil(image: torch.Tensor) -> Image.Image:
    """(1, 28, 28) float in [0, 1] -> 28x28 'L' image, exactly the MNIST bytes."""
    pixels = (image[0] * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="L")


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def mnist_png(image: torch.Tensor) -> bytes:
    return encode(mnist_pil(image))


def paper_photo(image: torch.Tensor, rng: random.Random, side: int = 256) -> Image.Image:
    """The digit as a person photographs it: dark ink on greyish paper, bigger, off-centre,
    slightly blurred and noisy, in RGB."""
    digit = mnist_pil(image)
    scale = rng.uniform(4.0, 7.0)
    size = round(28 * scale)
    digit = digit.resize((size, size), Image.Resampling.BICUBIC)
    paper_level = rng.randint(180, 235)
    ink_level = rng.randint(20, 70)
    canvas = np.full((side, side), float(paper_level), dtype=np.float32)
    top = rng.randint(0, side - size)
    left = rng.randint(0, side - size)
    ink = np.asarray(digit, dtype=np.float32) / 255.0
    region = canvas[top : top + size, left : left + size]
    canvas[top : top + size, left : left + size] = region * (1 - ink) + ink_level * ink
    gradient = np.linspace(-12, 12, side, dtype=np.float32)[None, :]  # uneven light
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 4, (side, side))
    canvas = np.clip(canvas + gradient + noise, 0, 255).astype(np.uint8)
    grey = Image.fromarray(canvas, mode="L").filter(ImageFilter.GaussianBlur(0.8))
    tint = (rng.randint(235, 255), rng.randint(230, 250), rng.randint(215, 240))
    return Image.merge("RGB", [grey.point(lambda v, t=t: v * t // 255) for t in tint])


def largest_drawing_png(side: int = 4999) -> bytes:
    """A 7 drawn in thick black strokes on a transparent side x side canvas (25 Mpx at the
    default, just under the service's pixel limit): mostly empty, so the PNG stays small, and a
    digit the service reads rather than refusing the page as blank."""
    image = Image.new("RGBA", (side, side))
    draw = ImageDraw.Draw(image)
    width = max(1, side // 25)
    top, left, right, bottom = side * 0.2, side * 0.3, side * 0.7, side * 0.8
    draw.line([(left, top), (right, top), (side * 0.45, bottom)], fill=(0, 0, 0, 255), width=width)
    return encode(image, "PNG", optimize=True)
